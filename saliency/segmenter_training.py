"""Train the UNet segmenter on synthetic image/mask pairs (Voynov & Babenko 2020, section 5;
Voynov, Morozov & Babenko 2021).

Pairs come from a folder written by ``saliency synthesize`` (PNG or shards, read with
``saliency.pairs.open_pairs``) or are drawn on the fly from a ``PairSynthesizer`` without
touching the disk. The defaults are the papers' (BigBiGAN code base): UNet at 128 px, Adam 1e-3
decayed by 0.2 every 8000 steps, 12000 steps of about 96 pairs (about 1.2M pairs seen), 1000
held-out pairs. Everything is a keyword argument so that a CPU demo can run at 64 px for minutes.

Resuming: ``checkpoint.pt`` holds the model, optimiser, scheduler, AMP scaler, step, RNG states
and the data stream's state; the streams (``saliency.training_data``) are pure functions of
(seed, step), so a resumed run on the CPU continues bit for bit.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from discovery.errors import UserError, library_call
from discovery.io import leaves_nothing_on_bad_input
from discovery.runtime import check_resume, get_logger, progress_bar, rng_state, set_rng_state
from saliency.training_data import (
    FolderStream,
    SynthStream,
    build_transform,
    describe_synthesizer,
    open_training_pairs,
    prepare_folder_val,
    prepare_synth_val,
    split_by_key,
    to_input,
)

CHECKPOINT = "checkpoint.pt"
# A resume keeps every setting but the run's length (another lr, seed or data would make another run).
_RESUME_FREE = ("steps",)


@library_call
@leaves_nothing_on_bad_input("out_dir", CHECKPOINT)
def train_segmenter(
    out_dir,                                  # run folder: checkpoint.pt, stats, segmenter.pt, summary.json
    *,
    data=None,                                # pairs folder from `saliency synthesize` (or a Dataset of (image, mask) with .keys)
    synthesizer=None,                         # or a PairSynthesizer: pairs drawn on the fly, nothing written
    directions=None,                          # or on the fly from a directions file (path or Directions), with:
    generator=None,                           #   its generator (None: the file's), a name or a LatentGenerator
    weights=None,                             #   weights of a named generator
    generator_options=None,                   #   options of a named generator (classes, truncation, ...)
    index="auto",                             #   background direction row, or "auto" (the file's recorded choice)
    sign="auto",                              #   1, -1 or "auto" (as saliency.synthesize chooses)
    rule="lighting",                          #   registered mask rule
    rule_options=None,                        #   its options (as saliency.synthesize)
    steps: int = 12_000,                      # optimiser steps (papers: 12000)
    batch_size: int = 96,                     # pairs per step summed over DDP processes (papers: 95)
    lr: float = 1e-3,                         # Adam learning rate (papers)
    lr_decay: float = 0.2,                    # learning-rate factor every lr_decay_every steps (papers)
    lr_decay_every: int = 8_000,              # 0: constant learning rate
    dice_weight: float = 0.0,                 # soft-dice term added to BCE-with-logits (0: BCE only, as the papers)
    image_size: int = 128,                    # square training crops (papers: 128); multiple of 2**encoder_depth
    encoder: str = "resnet18",                # smp encoder name, or "tu-<timm model>"
    encoder_weights: str | None = None,       # None: random init (offline); "imagenet" needs a download
    encoder_depth: int = 5,                   # UNet levels; inputs are padded to multiples of 2**depth
    decoder_channels=None,                    # one width per level; None: smp's (256, 128, 64, 32, 16)[:depth]
    augment: bool = True,                     # random resized crop, horizontal flip, colour jitter (mask follows)
    crop_scale=(0.5, 1.0),                    # area range of the random resized crop
    val_fraction: float = 0.01,               # share of a pairs folder held out (by key hash), at most val_pairs
    val_pairs: int = 1000,                    # held-out pairs: the cap for a folder, the count drawn on the fly (papers: 1000)
    val_every: int = 1000,                    # steps between validations (papers: 1000)
    log_every: int = 100,                     # steps between training-loss rows
    checkpoint_every: int = 1000,             # steps between atomic checkpoints (papers: 1000)
    resume: bool = False,                     # continue out_dir/checkpoint.pt (fresh start when there is none)
    seed: int = 0,                            # model init, data order, augmentation, on-the-fly latents
    device=None,                              # None/"auto": CUDA when present; under torchrun: cuda:LOCAL_RANK
    amp: bool = True,                         # mixed precision on CUDA (bf16 where supported, else fp16 + scaler)
    workers: int = 4,                         # data-loader processes for a pairs folder (0: in the main process)
    progress: bool = True,                    # progress bar
    ctx=None,                                 # the launcher's rank context (None: torchrun's environment)
    init_checkpoint=None,                     # start from this segmenter.pt's weights (fine-tuning; same architecture)
) -> dict:
    """The training stage: a UNet on synthetic pairs (a pairs folder, or drawn on the fly); returns the summary."""
    from discovery.io import ensure_fresh_output
    from saliency.segmenter import build_segmenter, default_decoder_channels, segmenter_config

    # ---- Check options (before anything is written: bad input leaves no folder behind)
    out = Path(out_dir)
    if sum(x is not None for x in (data, synthesizer, directions)) != 1:
        raise UserError("give exactly one source of pairs: a pairs folder (--data) or on-the-fly pairs (--on-the-fly --directions FILE)")
    for name, value, low in (("--steps", steps, 1), ("--batch-size", batch_size, 1), ("--image-size", image_size, 8),
                             ("--val-every", val_every, 1), ("--log-every", log_every, 1), ("--checkpoint-every", checkpoint_every, 1),
                             ("--val-pairs", val_pairs, 1), ("--workers", workers, 0)):
        if int(value) != value or value < low:
            raise UserError(f"{name} {value}: must be an integer >= {low}")
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction {val_fraction}: must be in (0, 1)")
    if not lr > 0 or not 0 < lr_decay <= 1 or not lr_decay_every >= 0 or not dice_weight >= 0:  # "not >": NaN fails too
        raise UserError("--lr must be > 0, --lr-decay in (0, 1], --lr-decay-every >= 0 and --dice-weight >= 0")
    crop_scale = tuple(float(s) for s in crop_scale)
    if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise UserError(f"--crop-scale {crop_scale}: expected two numbers 0 < low <= high <= 1")
    if image_size % (2 ** encoder_depth):
        raise UserError(f"--image-size {image_size}: must be a multiple of {2 ** encoder_depth} (2**encoder depth) for the UNet")
    decoder_channels = tuple(decoder_channels or default_decoder_channels(encoder_depth))
    ensure_fresh_output(out, resume, CHECKPOINT)

    # ---- Processes and device (torchrun sets WORLD_SIZE, RANK, LOCAL_RANK)
    from discovery.runtime import rank_context, rank_device

    own_context = ctx is None
    ctx = rank_context() if ctx is None else ctx
    world, rank = ctx.world_size, ctx.rank
    device = rank_device(device, ctx)
    if directions is not None:
        synthesizer = build_synthesizer(directions, device, generator=generator, weights=weights, generator_options=generator_options,
                                        index=index, sign=sign, rule=rule, rule_options=rule_options, seed=seed)
    if batch_size % world:
        raise UserError(f"--batch-size {batch_size}: must be divisible by the number of processes ({world})")
    rank_batch = batch_size // world
    lead = rank == 0
    log = get_logger("train-segmenter")
    say = log.info if lead else (lambda *a, **k: None)
    use_amp = bool(amp) and device.type == "cuda"

    # ---- Load training data
    say("Loading training data...")
    transform_train = build_transform(image_size, augment, crop_scale)
    transform_val = build_transform(image_size, False, crop_scale)
    if data is not None:
        pairs, source = open_training_pairs(data)
        train_idx, val_idx = split_by_key(pairs.keys, val_fraction, val_pairs)
        stream = FolderStream(pairs, train_idx, transform_train, seed=seed, batch_size=batch_size, rank=rank,
                               rank_batch=rank_batch, workers=workers, pin=device.type == "cuda")
        val_images, val_masks = (prepare_folder_val(pairs, val_idx, transform_val) if lead else (None, None))
        say(f"  {source}: {len(pairs)} pairs, {len(train_idx)} for training, {len(val_idx)} held out (by key)")
    else:
        source = f"on-the-fly: {describe_synthesizer(synthesizer)}"
        stream = SynthStream(synthesizer, transform_train, seed=seed, rank=rank, rank_batch=rank_batch)
        val_images, val_masks = (prepare_synth_val(synthesizer, transform_val, seed, val_pairs, rank_batch) if lead else (None, None))
        say(f"  {source}; {val_pairs} held-out pairs drawn with a separate seed")

    # ---- Construct network
    say("Constructing network...")
    from discovery.runtime import seed_everything

    seed_everything(seed)
    model = build_segmenter(encoder, encoder_weights, encoder_depth=encoder_depth, decoder_channels=decoder_channels).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_decay_every or 10**12, gamma=lr_decay)
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    config = segmenter_config(
        encoder, encoder_weights, encoder_depth, decoder_channels, image_size,
        source="folder" if data is not None else "on-the-fly", data=str(data) if isinstance(data, (str, Path)) else source,
        steps=steps, batch_size=batch_size, lr=lr, lr_decay=lr_decay, lr_decay_every=lr_decay_every, dice_weight=dice_weight,
        augment=bool(augment), crop_scale=list(crop_scale), val_fraction=val_fraction, val_pairs=val_pairs, seed=seed,
        amp=bool(amp), world_size=world, init_checkpoint=str(init_checkpoint) if init_checkpoint is not None else None,
    )
    say(f"  UNet {encoder} (depth {encoder_depth}, {'random init' if encoder_weights is None else encoder_weights}), "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, on {device}"
        f"{f' x {world} processes' if world > 1 else ''}{', AMP ' + str(amp_dtype).split('.')[-1] if use_amp else ''}")

    if init_checkpoint is not None:
        from discovery.checkpoints import load_state_dict_strict, read_checkpoint

        start_from = read_checkpoint(init_checkpoint, "a segmenter.pt to start from")
        if not isinstance(start_from.get("model"), dict):
            raise UserError(f"--init-checkpoint {init_checkpoint}: not a segmenter.pt (no 'model' entry)")
        load_state_dict_strict(model, start_from["model"], expected=f"the UNet of this run (encoder {encoder}, depth {encoder_depth})")
        say(f"  starting from the weights of {init_checkpoint}")

    # ---- Resume
    start_step = 0
    checkpoint_path = out / CHECKPOINT
    if resume and checkpoint_path.is_file():
        say(f"Resuming from {checkpoint_path}...")
        state = _read_training_checkpoint(checkpoint_path, config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_step = int(state["step"])
        stream.load_state_dict(state["data"], world)
        set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        say(f"  at step {start_step} of {steps}")
    elif resume:
        say(f"Resuming: no {CHECKPOINT} in {out} yet, starting fresh")
    stream.start(start_step)
    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # ---- Initialise logs
    from discovery.stats import StatsLogger

    logger = None
    if lead:
        say("Initialising logs...")
        out.mkdir(parents=True, exist_ok=True)
        logger = StatsLogger(out, resume_step=start_step if start_step else None)

    # ---- Train
    say(f"Training for {steps - start_step} steps ({(steps - start_step) * batch_size} pairs)...")
    from discovery.runtime import autocast

    def checkpoint(step: int) -> None:
        data_states = ctx.gather(stream.state_dict())
        rng_states = ctx.gather(rng_state())
        if lead:
            from discovery.io import atomic_torch_save

            atomic_torch_save({
                "format": "saliency.segmenter-training/1", "step": step, "config": config,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": rng_states, "data": data_states,
            }, checkpoint_path)

    def validate(step: int) -> dict:
        metrics, preview = evaluate_pairs(model, val_images, val_masks, device, batch_size=max(rank_batch, 16), amp_dtype=amp_dtype)
        logger.log(step, **{f"val/{k}": v for k, v in metrics.items()})
        _write_preview(preview, out / "val_predictions.png")
        return metrics

    metrics = {}
    if lead and start_step == 0:
        metrics = validate(0)
    ctx.barrier()
    bar = progress_bar(steps, initial=start_step, desc="train-segmenter", unit="step", enabled=progress and lead)
    window_loss, window_count, timed_images, timed_seconds = 0.0, 0, 0, 0.0
    step = start_step
    tick = time.perf_counter()
    train_model.train()
    while step < steps:
        images, masks = stream.next()
        x = to_input(images, device)
        y = masks.to(device, non_blocking=True).float().unsqueeze(1)
        with autocast(device, use_amp, amp_dtype):
            logits = train_model(x)
        loss = segmentation_loss(logits.float(), y, dice_weight)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        window_loss += loss.detach()  # no device sync per step
        window_count += 1
        bar.update(1)
        if step % log_every == 0 or step == steps:
            now = time.perf_counter()
            timed_images += window_count * batch_size
            timed_seconds += now - tick
            mean_loss = ctx.mean(float(window_loss) / window_count, device)
            if lead:
                logger.log(step, **{"train/loss": mean_loss, "train/lr": optimizer.param_groups[0]["lr"],
                                    "train/images_per_s": window_count * batch_size / max(now - tick, 1e-9)})
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            window_loss, window_count = 0.0, 0
            tick = time.perf_counter()
        validating = step % val_every == 0 or step == steps
        if lead and validating:
            train_model.eval()
            metrics = validate(step)
            train_model.train()
            bar.write(f"step {step}: val iou {metrics['iou']:.4f}  accuracy {metrics['accuracy']:.4f}  mae {metrics['mae']:.4f}  loss {metrics['loss']:.4f}")
            tick = time.perf_counter()
        if step % checkpoint_every == 0 or step == steps:
            checkpoint(step)
        if validating:
            ctx.barrier()  # the other processes wait while rank 0 validates
    bar.close()
    stream.close()

    # ---- Export
    summary: dict = {}
    if lead:
        say("Exporting segmenter.pt...")
        from discovery.io import run_manifest, write_json
        from saliency.segmenter import save_segmenter

        if not metrics:  # resumed a finished run: measure again rather than report nothing
            metrics = validate(step)
        manifest = run_manifest(step=step, seed=seed, source=source, pairs_seen=step * batch_size)
        save_segmenter(model, config, out / "segmenter.pt", manifest=manifest)
        history = [{k.split("/", 1)[-1] if k != "step" else k: v for k, v in row.items()}
                   for row in logger.rows if "val/iou" in row]
        summary = {
            "segmenter": str(out / "segmenter.pt"),
            "val_predictions": str(out / "val_predictions.png"),
            "step": step,
            "pairs_seen": step * batch_size,
            "source": source,
            "train_pairs": stream.size,
            "val_pairs": int(len(val_images)),
            "val": metrics,
            "val_history": history,
            "images_per_s": timed_images / timed_seconds if timed_seconds else None,
            "device": str(device),
            "world_size": world,
            "config": config,
            "manifest": manifest,
        }
        write_json(summary, out / "summary.json")
        logger.close()
        say(f"  val iou {metrics['iou']:.4f}, accuracy {metrics['accuracy']:.4f}, mae {metrics['mae']:.4f} -> {out / 'segmenter.pt'}")
    ctx.barrier()
    if own_context:
        ctx.close()
    return summary


def build_synthesizer(directions, device, *, generator=None, weights=None, generator_options=None, index="auto", sign="auto",
                      rule="lighting", rule_options=None, seed: int = 0):
    """The PairSynthesizer ``saliency.synthesize`` would use with the same options (on-the-fly training)."""
    from discovery.directions import Directions
    from discovery.generators.resolve import generator_for_directions
    from discovery.runtime import get_logger
    from saliency.direction_choice import resolve_direction
    from saliency.masks import build_rule
    from saliency.synthesis import PairSynthesizer

    if not isinstance(directions, Directions):
        directions = Directions.load(directions, generator if isinstance(generator, str) else None)
    model, _ = generator_for_directions(directions, generator, weights=weights, generator_options=generator_options, device=device)
    rule = build_rule(rule, **(rule_options or {})) if isinstance(rule, str) else rule
    index, sign, _ = resolve_direction(model, directions, rule, index=index, sign=sign, seed=seed, device=device)
    synthesizer = PairSynthesizer(model, directions, index, rule, device, sign=sign)
    get_logger("train-segmenter").info(f"on the fly: generator {model.name}, direction {index}, sign {sign:+d}, {rule.name} rule, "
                                       f"shift {synthesizer.shift:g}")
    return synthesizer


# ----------------------------------------------------------------------------- loss and metrics


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.0) -> torch.Tensor:
    """BCE with logits, plus ``dice_weight`` times the soft-dice loss of the batch."""
    loss = F.binary_cross_entropy_with_logits(logits, target)
    if dice_weight:
        prob = torch.sigmoid(logits).flatten(1)
        target = target.flatten(1)
        dice = 1 - (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
        loss = loss + dice_weight * dice.mean()
    return loss


@torch.no_grad()
def evaluate_pairs(model, images: torch.Tensor, masks: torch.Tensor, device, batch_size: int = 32, amp_dtype=None,
                   preview: int = 8) -> tuple[dict, tuple]:
    """Per-image IoU and accuracy at 0.5, mean absolute error and BCE, averaged over held-out pairs.

    IoU of an empty prediction on an empty mask is 1. Returns (metrics, preview arrays)."""
    from discovery.runtime import autocast

    was_training = model.training
    model.eval()
    sums = {"iou": 0.0, "accuracy": 0.0, "mae": 0.0, "loss": 0.0}
    shown = None
    for start in range(0, len(images), batch_size):
        x = to_input(images[start : start + batch_size], device)
        y = masks[start : start + batch_size].to(device).float().unsqueeze(1)
        with autocast(device, amp_dtype is not None, amp_dtype):
            logits = model(x)
        logits = logits.float()
        prob = torch.sigmoid(logits)
        hard = prob >= 0.5
        truth = y >= 0.5
        inter = (hard & truth).flatten(1).sum(1).float()
        union = (hard | truth).flatten(1).sum(1).float()
        sums["iou"] += torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).sum().item()
        sums["accuracy"] += (hard == truth).flatten(1).float().mean(1).sum().item()
        sums["mae"] += (prob - y).abs().flatten(1).mean(1).sum().item()
        sums["loss"] += F.binary_cross_entropy_with_logits(logits, y, reduction="none").flatten(1).mean(1).sum().item()
        if shown is None:
            shown = prob[:preview, 0].cpu()
    model.train(was_training)
    n = max(len(images), 1)
    metrics = {k: v / n for k, v in sums.items()}
    k = len(shown)
    return metrics, (images[:k].numpy(), masks[:k].numpy(), shown.numpy())


def _write_preview(preview, path: Path, min_tile: int = 96) -> None:
    """Three rows: held-out images, their synthetic masks, the segmenter's predictions."""
    from discovery.images import make_grid, save_png

    images, masks, preds = preview
    masks_rgb = np.repeat((masks * 255).astype(np.uint8)[..., None], 3, axis=3)
    preds_rgb = np.repeat(np.round(preds * 255).astype(np.uint8)[..., None], 3, axis=3)
    tiles = np.concatenate([images, masks_rgb, preds_rgb])
    zoom = -(-min_tile // tiles.shape[1])  # small training crops are enlarged (nearest) to be seen
    if zoom > 1:
        tiles = tiles.repeat(zoom, axis=1).repeat(zoom, axis=2)
    save_png(make_grid(tiles, rows=3, cols=len(images)), path)


# ----------------------------------------------------------------------------- checkpoints, RNG, processes


def _read_training_checkpoint(path: Path, config: dict) -> dict:
    from discovery.checkpoints import read_checkpoint

    state = read_checkpoint(path, "a train-segmenter checkpoint.pt")
    if state.get("format") != "saliency.segmenter-training/1":
        raise UserError(f"{path}: not a train-segmenter checkpoint (format {state.get('format')!r})")
    check_resume(state.get("config", {}), config, path.parent, keys=[key for key in config if key not in _RESUME_FREE])
    return state
