"""Voynov & Babenko (ICML 2020): unsupervised discovery of interpretable latent directions.

A deformator A holds K directions; a reconstructor R sees G(z) and G(z + A(eps e_k)) and must
tell which direction k was taken and how far (eps). Both are trained jointly with
``label_weight * CE(k) + shift_weight * |eps_hat - eps|``; directions that are easy to tell
apart turn out to be interpretable. The generator is frozen but differentiable: gradients
reach the deformator through it.

Shift sampling (as in the official code): eps = shift_scale * U[-1, 1], and values with
|eps| < min_shift are *pushed* to +/- min_shift (same sign), not resampled; so +/- min_shift
carry probability min_shift / shift_scale together.

The quality measure is the reconstructor classification accuracy (RCA) on held-out samples
drawn from a fixed seed (``RCA_SEED``), the same for every run, so numbers are comparable.
``measure_rca`` trains only a reconstructor against fixed directions: the paper's random and
coordinate-axis baselines, and any other method's directions.

Layout of ``out_dir``: ``checkpoint.pt`` (atomic, every ``checkpoint_every`` steps and at the
end), ``stats.jsonl`` / ``stats.csv`` / ``tensorboard/``, ``directions.pt``, ``summary.json``
and, with ``baselines=True``, ``baselines/<kind>/`` (the same files for each baseline).
Resuming continues bit-for-bit on the CPU; on CUDA, up to the GPU kernels' own nondeterminism.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from discovery.deformators import DEFORMATOR_TYPES, Deformator, FixedDeformator, build_deformator
from discovery.directions import Directions
from discovery.errors import UserError
from discovery.runtime import get_logger

log = get_logger("voynov")
from discovery.reconstructors import RECONSTRUCTOR_TYPES, build_reconstructor

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "saliency.voynov-checkpoint/1"
RCA_SEED = 20_200_216  # held-out samples for RCA: one fixed stream for every run and method
BASELINES = ("random", "identity")
# Options that define the optimisation; a resumed run must agree on all of them.
_RESUME_KEYS = (
    "generator", "weights", "dim_z", "directions", "batch_size", "shift_scale", "min_shift", "deformator",
    "deformator_random_init", "reconstructor", "reconstructor_resolution", "lr", "label_weight", "shift_weight", "seed",
)  # fmt: skip


def _init_generator(kind: str, seed: int) -> torch.Generator:
    """Seeds a deformator's initial (or fixed random) directions.

    Random baseline directions come from a stream offset from ``seed``: a plain seed would
    reproduce any basis that a generator drew from the same seed (the procedural generator's
    true factors come from seed 0).
    """
    return torch.Generator().manual_seed(seed + (1_000_003 if kind == "random" else 0))


def sample_shifts(n: int, shift_scale: float, min_shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """eps = shift_scale * U[-1, 1], with |eps| < min_shift pushed out to +/- min_shift (0 goes to +min_shift)."""
    eps = shift_scale * (2 * torch.rand(n, generator=generator) - 1)
    sign = torch.where(eps < 0, -1.0, 1.0)
    return sign * eps.abs().clamp_min(min_shift)


def _adam(parameters, lr: float) -> torch.optim.Adam:
    """Adam, fused where this torch build has it (several times faster on small networks, CPU included)."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(parameters, lr=lr)


def _section(title: str, verbose: bool) -> None:
    if verbose:
        log.info(f"{title}...")


class VoynovTrainer:
    """One training step of deformator and reconstructor, and everything a checkpoint needs.

    All randomness of a step (latents, conditions, direction indices, shifts) comes from one
    CPU ``torch.Generator`` (``self.sampler``), so a run is reproducible across devices and
    resumable bit-for-bit from ``state_dict()``.
    """

    def __init__(
        self,
        generator,
        deformator: Deformator,
        reconstructor: torch.nn.Module,
        *,
        batch_size: int,
        shift_scale: float,
        min_shift: float,
        lr: float,
        label_weight: float,
        shift_weight: float,
        device: torch.device,
        amp: bool,
        seed: int,
    ):
        self.generator = generator.eval().requires_grad_(False).to(device)
        self.device = device
        self.deformator = deformator.to(device).train()
        self.reconstructor = reconstructor.to(device).train()
        if device.type == "cuda":
            self.reconstructor.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick its fastest kernels
        self.batch_size, self.shift_scale, self.min_shift = batch_size, shift_scale, min_shift
        self.label_weight, self.shift_weight = label_weight, shift_weight
        self.count = deformator.count
        self.deformator_opt = _adam(deformator.parameters(), lr) if deformator.trainable else None
        self.reconstructor_opt = _adam(reconstructor.parameters(), lr)
        self.amp = bool(amp and device.type == "cuda")
        self.amp_dtype = None
        if self.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.sampler = torch.Generator().manual_seed(seed)
        self.step = 0

    def _autocast(self):
        from discovery.runtime import autocast

        return autocast(self.device, self.amp, self.amp_dtype)

    def sample(self, n: int | None = None, sampler: torch.Generator | None = None, indices: torch.Tensor | None = None):
        """(z, condition, k, eps) for one batch; ``indices`` fixes k (balanced held-out sets)."""
        n = n or self.batch_size
        sampler = sampler or self.sampler
        z = self.generator.sample_latent(n, sampler)
        condition = self.generator.sample_condition(n, sampler)
        k = torch.randint(self.count, (n,), generator=sampler) if indices is None else indices
        eps = sample_shifts(n, self.shift_scale, self.min_shift, sampler)
        return z, condition, k.to(self.device, non_blocking=True), eps.to(self.device, non_blocking=True)

    def images(self, z, condition, k, eps, grad: bool):
        """G(z, c) and G(z + A(eps e_k), c); only the shifted one carries gradients to A."""
        with torch.no_grad(), self._autocast():
            original = self.generator(z, condition)
        with torch.set_grad_enabled(grad):
            shift = self.deformator(k, eps)
            with self._autocast():
                shifted = self.generator(z + shift.to(z.dtype), condition)
        return original, shifted

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimisation step; returns detached scalars (no device sync)."""
        z, condition, k, eps = self.sample()
        original, shifted = self.images(z, condition, k, eps, grad=self.deformator_opt is not None)
        with self._autocast():
            logits, eps_hat = self.reconstructor(original, shifted)
        label_loss = F.cross_entropy(logits.float(), k)
        shift_error = (eps_hat.float() - eps).abs().mean()
        loss = self.label_weight * label_loss + self.shift_weight * shift_error
        self.reconstructor_opt.zero_grad(set_to_none=True)
        if self.deformator_opt is not None:
            self.deformator_opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for optimizer in (self.reconstructor_opt, self.deformator_opt):
            if optimizer is not None:
                self.scaler.step(optimizer)
        self.scaler.update()
        self.step += 1
        accuracy = (logits.detach().argmax(1) == k).float().mean()
        return {"loss": loss.detach(), "label_loss": label_loss.detach(), "accuracy": accuracy, "shift_error": shift_error.detach()}

    @torch.no_grad()
    def evaluate(self, samples: int = 1024, seed: int = RCA_SEED, progress: bool = False) -> dict:
        """Held-out RCA: every direction equally often, latents and shifts from a fixed seed."""
        from discovery.runtime import progress_bar

        was_training = self.reconstructor.training
        self.reconstructor.eval()
        sampler = torch.Generator().manual_seed(seed)
        per_direction = max(1, math.ceil(samples / self.count))
        indices = torch.arange(self.count).repeat(per_direction)
        correct = torch.zeros(self.count, device=self.device)
        error = torch.zeros(self.count, device=self.device)
        batches = indices.split(self.batch_size)
        bar = progress_bar(len(batches), desc="RCA", unit="batch", enabled=progress, leave=False)
        for batch in batches:
            bar.update(1)
            z, condition, k, eps = self.sample(len(batch), sampler, batch)
            original, shifted = self.images(z, condition, k, eps, grad=False)
            with self._autocast():
                logits, eps_hat = self.reconstructor(original, shifted)
            correct.index_add_(0, k, (logits.argmax(1) == k).float())
            error.index_add_(0, k, (eps_hat.float() - eps).abs())
        bar.close()
        self.reconstructor.train(was_training)
        correct, error = correct.cpu() / per_direction, error.cpu() / per_direction
        return {
            "rca": float(correct.mean()),
            "shift_error": float(error.mean()),
            "per_direction_accuracy": correct.tolist(),
            "per_direction_shift_error": error.tolist(),
            "samples": int(len(indices)),
        }

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "deformator": self.deformator.state_dict(),
            "reconstructor": self.reconstructor.state_dict(),
            "deformator_opt": self.deformator_opt.state_dict() if self.deformator_opt is not None else None,
            "reconstructor_opt": self.reconstructor_opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.deformator.load_state_dict(state["deformator"])
        self.reconstructor.load_state_dict(state["reconstructor"])
        if self.deformator_opt is not None:
            self.deformator_opt.load_state_dict(state["deformator_opt"])
        self.reconstructor_opt.load_state_dict(state["reconstructor_opt"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def _validate(generator, config: dict, out_dir, resume: bool) -> None:
    """Every option checked before anything is written (a bad run leaves no folder behind)."""
    for attribute in ("dim_z", "resolution", "sample_latent"):
        if not hasattr(generator, attribute):
            raise UserError(f"the generator has no {attribute!r}: wrap plain modules with discovery.wrap_generator")
    c = config
    checks = [
        (c["directions"] >= 1, f"--directions {c['directions']}: must be at least 1"),
        (c["deformator"] in DEFORMATOR_TYPES, f"--deformator {c['deformator']!r}: unknown (expected one of {', '.join(DEFORMATOR_TYPES)})"),
        (c["deformator"] in ("linear", "projective") or c["directions"] <= c["dim_z"],
         f"--directions {c['directions']}: the {c['deformator']} deformator needs at most dim_z = {c['dim_z']} directions"),
        (c["reconstructor"] in RECONSTRUCTOR_TYPES, f"--reconstructor {c['reconstructor']!r}: unknown (expected one of {', '.join(RECONSTRUCTOR_TYPES)})"),
        (c["steps"] >= 1, f"--steps {c['steps']}: must be at least 1"),
        (c["batch_size"] >= 2, f"--batch-size {c['batch_size']}: must be at least 2 (the reconstructor uses batch norm)"),
        (math.isfinite(c["shift_scale"]) and c["shift_scale"] > 0, f"--shift-scale {c['shift_scale']}: must be positive"),
        (0 <= c["min_shift"] <= c["shift_scale"], f"--min-shift {c['min_shift']}: must be in [0, shift scale {c['shift_scale']}]"),
        (math.isfinite(c["lr"]) and c["lr"] > 0, f"--lr {c['lr']}: must be positive"),
        (c["label_weight"] >= 0 and c["shift_weight"] >= 0, "--label-weight and --shift-weight: must not be negative"),
        (c["label_weight"] + c["shift_weight"] > 0, "--label-weight and --shift-weight: not both zero"),
        (c["rca_samples"] >= 1, f"--rca-samples {c['rca_samples']}: must be at least 1"),
        (c["checkpoint_every"] >= 1 and c["log_every"] >= 1, "--checkpoint-every and --log-every: must be at least 1"),
        (c["reconstructor_resolution"] is None or c["reconstructor_resolution"] >= 8,
         f"--reconstructor-resolution {c['reconstructor_resolution']}: must be at least 8"),
        (not resume or out_dir is not None, "resume=True needs an out_dir"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    if out_dir is not None:
        from discovery.io import ensure_fresh_output

        ensure_fresh_output(Path(out_dir), resume, CHECKPOINT)
        if resume and not (Path(out_dir) / CHECKPOINT).is_file():
            raise UserError(f"--resume: {out_dir} holds no {CHECKPOINT} to continue; drop --resume to start a new run")


def _read_checkpoint(out_dir: Path, config: dict) -> dict:
    from discovery.checkpoints import read_checkpoint

    path = out_dir / CHECKPOINT
    state = read_checkpoint(path, "a checkpoint of `saliency discover --method voynov`")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a Voynov checkpoint (format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
    from discovery.runtime import check_resume

    check_resume(state.get("config", {}), config, out_dir, keys=_RESUME_KEYS)
    return state


def _fit(trainer: VoynovTrainer, config: dict, out_dir: Path | None, *, resume: bool, verbose: bool, progress: bool, desc: str) -> dict:
    """Train ``trainer`` to ``config['steps']`` with checkpoints and logs in ``out_dir`` (None: in memory)."""
    from discovery.io import atomic_torch_save

    steps, log_every, checkpoint_every = config["steps"], config["log_every"], config["checkpoint_every"]
    names = ("loss", "label_loss", "accuracy", "shift_error")
    window = torch.zeros(len(names), device=trainer.device)  # running sums of the logged scalars since the last log row
    window_steps = 0
    if resume:
        _section("Resume", verbose)
        state = _read_checkpoint(out_dir, config)
        trainer.load_state_dict(state["trainer"])
        window = state["window"].to(trainer.device)
        window_steps = int(state["window_steps"])
        if verbose:
            log.info(f"continuing from step {trainer.step} of {steps}")

    logger = None
    if out_dir is not None:
        from discovery.stats import StatsLogger

        _section("Initialize logs", verbose)
        logger = StatsLogger(out_dir, resume_step=trainer.step if resume else None)

    def save_checkpoint(held_out: dict) -> None:
        state = {"format": CHECKPOINT_FORMAT, "config": config, "trainer": trainer.state_dict(), "window": window.cpu(),
                 "window_steps": window_steps, "held_out": held_out}
        atomic_torch_save(state, out_dir / CHECKPOINT)

    last: dict = {}
    # The held-out evaluation at the last step, reused by the caller (and kept in the checkpoint, so a
    # resumed finished run does not measure it again).
    held_out = state.get("held_out") if resume and trainer.step >= steps else None
    _section("Train", verbose)
    from tqdm import tqdm

    start_step, start_time = trainer.step, time.perf_counter()
    with tqdm(total=steps, initial=trainer.step, desc=desc, unit="step", disable=not progress, dynamic_ncols=True, leave=verbose) as bar:
        while trainer.step < steps:
            scalars = trainer.train_step()
            window += torch.stack([scalars[n] for n in names])
            window_steps += 1
            bar.update(1)
            row = {}
            if trainer.step % log_every == 0 or trainer.step == steps:
                means = (window / window_steps).tolist()
                last = dict(zip(names, means))
                row.update(last)
                window.zero_()
                window_steps = 0
                bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.3f}", refresh=False)
            checkpoint_now = out_dir is not None and (trainer.step % checkpoint_every == 0 or trainer.step == steps)
            if checkpoint_now:
                held_out = trainer.evaluate(config["rca_samples"], progress=progress)  # its own random stream: training is unaffected
                row["rca"] = held_out["rca"]
            if row and logger is not None:
                logger.log(trainer.step, **row)  # before the checkpoint: a kill in between re-logs the step on resume
            if checkpoint_now:
                save_checkpoint(held_out)
    elapsed = time.perf_counter() - start_time
    if logger is not None:
        logger.close()
    if held_out is None:  # no checkpoint at the last step (in memory, or nothing left to train)
        held_out = trainer.evaluate(config["rca_samples"], progress=progress)
    return {
        "held_out": held_out,
        "final_train": last,
        "train_seconds": elapsed,
        "steps_per_second": (trainer.step - start_step) / elapsed if elapsed > 0 and trainer.step > start_step else None,
    }


def _build_trainer(generator, deformator: Deformator, config: dict, device, amp: bool) -> VoynovTrainer:
    torch.manual_seed(config["seed"])  # the reconstructor's random init
    reconstructor = build_reconstructor(
        config["reconstructor"], deformator.count, int(generator.resolution), resolution=config["reconstructor_resolution"]
    )
    return VoynovTrainer(
        generator, deformator, reconstructor,
        batch_size=config["batch_size"], shift_scale=config["shift_scale"], min_shift=config["min_shift"], lr=config["lr"],
        label_weight=config["label_weight"], shift_weight=config["shift_weight"], device=device, amp=amp, seed=config["seed"],
    )  # fmt: skip


def measure_rca(
    generator,                      # LatentGenerator the directions belong to
    directions,                     # Directions (or a (K, dim_z) tensor): held FIXED, only a reconstructor is trained
    *,
    steps=10_000,                   # reconstructor training steps
    batch_size=32,                  # samples per step
    seed=0,                         # seeds the reconstructor and the training samples
    device=None,                    # None/"auto": CUDA when present
    shift_scale=None,               # shifts eps in [-shift_scale, shift_scale]; None: the directions file's own
    min_shift=0.5,                  # |eps| below this is pushed out to +/- min_shift
    lr=1e-4,                        # Adam learning rate of the reconstructor
    label_weight=1.0,               # weight of the direction-classification loss
    shift_weight=0.25,              # weight of the L1 shift-regression loss
    reconstructor="auto",           # auto | lenet | resnet18
    reconstructor_resolution=None,  # resize larger images to this before the reconstructor (None: never)
    rca_samples=1024,               # held-out samples for the accuracy (every direction equally often)
    amp=True,                       # mixed precision on CUDA
    out_dir=None,                   # folder for checkpoints and logs (None: nothing on disk)
    resume=False,                   # continue from out_dir/checkpoint.pt
    checkpoint_every=1000,          # steps between checkpoints when out_dir is given
    log_every=100,                  # steps between log rows
    progress=False,                 # progress bar
    details=False,                  # True: return the full held-out evaluation dict instead of the accuracy
) -> float:
    """Reconstructor classification accuracy of FIXED directions: how distinguishable they are.

    The baselines of the paper are ``measure_rca`` of random orthonormal directions and of the
    coordinate axes; any method's directions file can be scored the same way.
    """
    from discovery.runtime import resolve_device

    matrix = directions.matrix if isinstance(directions, Directions) else torch.as_tensor(directions)
    if shift_scale is None:
        shift_scale = directions.shift_scale if isinstance(directions, Directions) else 6.0
    if matrix.ndim != 2 or matrix.shape[1] != getattr(generator, "dim_z", None):
        raise UserError(f"directions of shape {tuple(matrix.shape)} do not fit a generator with dim_z = {getattr(generator, 'dim_z', None)}")
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    config = _config(generator, matrix.shape[0], steps, batch_size, float(shift_scale), min_shift, "linear", True, reconstructor,
                     reconstructor_resolution, lr, label_weight, shift_weight, seed, rca_samples, checkpoint_every, log_every)  # fmt: skip
    config["deformator"] = "fixed"
    _validate(generator, {**config, "deformator": "linear"}, out_dir, resume)
    trainer = _build_trainer(generator, FixedDeformator(matrix), config, device, amp)
    result = _fit(trainer, config, Path(out_dir) if out_dir is not None else None, resume=resume, verbose=False, progress=progress, desc="rca")["held_out"]
    return result if details else result["rca"]


def _config(generator, directions, steps, batch_size, shift_scale, min_shift, deformator, deformator_random_init, reconstructor,
            reconstructor_resolution, lr, label_weight, shift_weight, seed, rca_samples, checkpoint_every, log_every) -> dict:  # fmt: skip
    return {
        "generator": getattr(generator, "name", "custom"),
        "weights": getattr(generator, "weights_path", None),
        "dim_z": int(generator.dim_z),
        "directions": int(directions),
        "steps": int(steps),
        "batch_size": int(batch_size),
        "shift_scale": float(shift_scale),
        "min_shift": float(min_shift),
        "deformator": deformator,
        "deformator_random_init": bool(deformator_random_init),
        "reconstructor": reconstructor,
        "reconstructor_resolution": reconstructor_resolution,
        "lr": float(lr),
        "label_weight": float(label_weight),
        "shift_weight": float(shift_weight),
        "seed": int(seed),
        "rca_samples": int(rca_samples),
        "checkpoint_every": int(checkpoint_every),
        "log_every": int(log_every),
    }


def discover_voynov(
    generator,                      # LatentGenerator (frozen; gradients flow through it to the deformator)
    out_dir=None,                   # run folder: checkpoint, logs, directions.pt, summary.json (None: nothing on disk)
    *,
    directions=None,                # K, the number of directions; None: dim_z
    steps=100_000,                  # training steps (paper: 1e5)
    batch_size=32,                  # samples per step, one direction index and one shift each (paper: 32)
    shift_scale=6.0,                # eps = shift_scale * U[-1, 1] (paper: 6)
    min_shift=0.5,                  # |eps| below this is pushed out to +/- min_shift (paper: 0.5)
    deformator="linear",            # linear | projective | ortho | random | identity
    deformator_random_init=True,    # linear/projective: identity + 0.1 N(0,1); ortho: N(0,1) log-parameter (official code)
    reconstructor="auto",           # auto (ResNet-18 from 64 px, LeNet below) | lenet | resnet18
    reconstructor_resolution=None,  # resize larger images to this before the reconstructor (None: never)
    lr=1e-4,                        # Adam learning rate, deformator and reconstructor (paper: 1e-4)
    label_weight=1.0,               # weight of the direction-classification loss (paper: 1)
    shift_weight=0.25,              # weight of the L1 shift-regression loss (paper: 0.25)
    checkpoint_every=1000,          # steps between atomic checkpoints (and held-out RCA log rows)
    log_every=100,                  # steps between log rows (loss, accuracy, shift error)
    rca_samples=1024,               # held-out samples for the final RCA (every direction equally often)
    baselines=False,                # also train reconstructors on random and identity directions for comparison
    baseline_steps=None,            # their training steps (None: the same as steps)
    resume=False,                   # continue from out_dir/checkpoint.pt
    seed=0,                         # seeds the deformator, the reconstructor and every sample
    device=None,                    # None/"auto": CUDA when present
    amp=True,                       # mixed precision (bf16, else fp16 with loss scaling) on CUDA; CPU is always fp32
    generator_options=None,         # how to rebuild the generator (classes, truncation, weights), kept in directions.pt
    progress=True,                  # titled sections and progress bars
) -> Directions:
    """Train a deformator and a reconstructor; return (and save in ``out_dir``) the directions.

    The generator is moved to ``device``, put in eval mode and frozen (``requires_grad_(False)``)
    in place. Row k of the returned matrix is column k of the deformator, unnormalised for the
    linear deformator, so ``z + eps * matrix[k]`` with |eps| <= shift_scale is what training saw.
    """
    from discovery.io import run_manifest, write_json
    from discovery.runtime import resolve_device

    K = int(generator.dim_z) if directions is None else int(directions)
    config = _config(generator, K, steps, batch_size, shift_scale, min_shift, deformator, deformator_random_init, reconstructor,
                     reconstructor_resolution, lr, label_weight, shift_weight, seed, rca_samples, checkpoint_every, log_every)  # fmt: skip
    _validate(generator, config, out_dir, resume)
    if baseline_steps is not None and baseline_steps < 1:
        raise UserError(f"--baseline-steps {baseline_steps}: must be at least 1")
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    out = Path(out_dir) if out_dir is not None else None
    if progress:
        log.info("Options: " + ", ".join(f"{k}={v}" for k, v in config.items()) + f", device={device}, amp={amp and device.type == 'cuda'}")

    _section("Construct networks", progress)
    deformer = build_deformator(deformator, K, int(generator.dim_z), random_init=deformator_random_init, generator=_init_generator(deformator, seed))
    trainer = _build_trainer(generator, deformer, config, device, amp)
    if progress:
        counts = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in (deformer, trainer.reconstructor)]
        log.info(f"deformator {deformer.kind} {K} x {generator.dim_z} ({counts[0]:,} trainable), "
              f"reconstructor {type(trainer.reconstructor).__name__} ({counts[1]:,} trainable)")  # fmt: skip

    training = _fit(trainer, config, out, resume=resume, verbose=progress, progress=progress, desc="voynov")

    held_out = training.pop("held_out")
    if progress:
        log.info(f"RCA {held_out['rca']:.4f} over {held_out['samples']} held-out samples, mean |eps error| {held_out['shift_error']:.3f}")

    baseline_rca = {}
    if baselines:
        for kind in BASELINES:
            if kind == deformator:
                baseline_rca[kind] = held_out["rca"]
                continue
            if K > generator.dim_z:
                continue  # random orthonormal / axis directions need K <= dim_z
            _section(f"Baseline: {kind} directions", progress)
            fixed = build_deformator(kind, K, int(generator.dim_z), generator=_init_generator(kind, seed)).matrix()
            folder = out / "baselines" / kind if out is not None else None
            baseline_resume = folder is not None and (folder / CHECKPOINT).is_file()
            baseline_rca[kind] = measure_rca(
                generator, fixed, steps=baseline_steps or steps, batch_size=batch_size, seed=seed, device=device, shift_scale=shift_scale,
                min_shift=min_shift, lr=lr, label_weight=label_weight, shift_weight=shift_weight, reconstructor=reconstructor,
                reconstructor_resolution=reconstructor_resolution, rca_samples=rca_samples, amp=amp, out_dir=folder,
                resume=baseline_resume, checkpoint_every=checkpoint_every, log_every=log_every, progress=progress,
            )  # fmt: skip
            if progress:
                log.info(f"RCA of {kind} directions: {baseline_rca[kind]:.4f}")

    _section("Export directions", progress)
    with torch.no_grad():
        matrix = deformer.matrix().detach().float().cpu()
    summary = {
        "method": "voynov",
        "generator": config["generator"],
        "deformator": deformator,
        "directions": K,
        "dim_z": int(generator.dim_z),
        "steps": trainer.step,
        "rca": held_out["rca"],
        "rca_samples": held_out["samples"],
        "shift_error": held_out["shift_error"],
        "baselines": baseline_rca,
        "beats_baselines": all(held_out["rca"] > v for v in baseline_rca.values()) if baseline_rca and deformator not in BASELINES else None,
        **training,
        "config": config,
    }
    result = Directions(
        matrix=matrix,
        generator=config["generator"],
        method="voynov",
        shift_scale=shift_scale,
        stats={
            "accuracy": held_out["per_direction_accuracy"],
            "shift_error": held_out["per_direction_shift_error"],
            "norm": matrix.norm(dim=1).tolist(),
        },
        manifest=run_manifest(
            method="voynov", shift_range=[-shift_scale, shift_scale], min_shift=min_shift, rca=held_out["rca"], baselines=baseline_rca,
            generator_info=generator.describe() if hasattr(generator, "describe") else {}, config=config,
            weights_path=getattr(generator, "weights_path", None),
        ),  # fmt: skip
        generator_options=dict(generator_options or {}),
    )
    if out is not None:
        result.save(out / "directions.pt")
        write_json({**summary, "manifest": result.manifest}, out / "summary.json")
        if progress:
            log.info(f"wrote {out / 'directions.pt'} and {out / 'summary.json'}")
    return result


from discovery.methods import MethodOption, register_method  # noqa: E402  (registration at the end of the module)

register_method(
    "voynov",
    description="Voynov & Babenko 2020: a deformator and a reconstructor trained together (defaults: the paper's)",
    resumable=True,
    marker=CHECKPOINT,
    options=(
        MethodOption("directions", "number of directions K (None: dim_z)", int),
        MethodOption("steps", "training steps (paper: 1e5)", int),
        MethodOption("batch_size", "samples per step", int),
        MethodOption("shift_scale", "shifts eps = s * U[-1, 1]", float),
        MethodOption("min_shift", "smallest |eps|; smaller shifts are pushed out to it", float),
        MethodOption("deformator", "direction matrix type", str, DEFORMATOR_TYPES),
        MethodOption("reconstructor", "auto: ResNet-18 from 64 px, LeNet below", str, RECONSTRUCTOR_TYPES),
        MethodOption("lr", "Adam learning rate of deformator and reconstructor", float),
        MethodOption("label_weight", "weight of the direction-classification loss", float),
        MethodOption("shift_weight", "weight of the L1 shift loss", float),
        MethodOption("rca_samples", "held-out samples for the reconstructor accuracy (RCA)", int),
        MethodOption("baselines", "also train reconstructors on random and identity directions and report their RCA", bool),
        MethodOption("baseline_steps", "baseline training steps (None: --steps)", int),
        MethodOption("checkpoint_every", "steps between checkpoints", int),
        MethodOption("log_every", "steps between log rows", int),
        MethodOption("amp", "mixed precision on CUDA", bool),
    ),
)(discover_voynov)
