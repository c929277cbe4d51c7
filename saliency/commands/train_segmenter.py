"""``saliency train-segmenter``: train the UNet on synthetic pairs (calls ``saliency.train_segmenter``)."""

from __future__ import annotations

from saliency.commands.common import add_generator_arguments, add_mask_rule_arguments, mask_rule_options
from saliency.commands.registry import register_command

NAME = "train-segmenter"
HELP = "train a UNet segmenter on synthetic image/mask pairs"
DESCRIPTION = """Train a segmentation-models-pytorch UNet on image/mask pairs written by
`saliency synthesize` (--data DIR), or drawn from the generator on the fly without writing them
(--on-the-fly --directions FILE --index I|auto). Defaults are the papers' (128 px, Adam 1e-3,
12000 steps of 96 pairs); a CPU demo wants e.g. --image-size 64 --steps 600 --batch-size 16.

--out receives checkpoint.pt (continue with --resume), stats.jsonl/csv, tensorboard/,
val_predictions.png (held-out image / mask / prediction), segmenter.pt (the file
`saliency evaluate --checkpoint` reads) and summary.json. Under `torchrun --nproc_per_node N`
it trains with DDP; --batch-size is then the sum over processes."""


def _int_list(text: str) -> list[int]:
    return [int(part) for part in str(text).split(",") if part.strip()]


def _float_pair(text: str) -> tuple[float, float]:
    parts = [float(part) for part in str(text).split(",") if part.strip()]
    if len(parts) != 2:
        raise ValueError(text)
    return parts[0], parts[1]


def add_arguments(parser):
    source = parser.add_argument_group("pairs")
    source.add_argument("--data", default=None, help="pairs folder written by `saliency synthesize` (PNG or shards)")
    source.add_argument("--on-the-fly", action="store_true", help="draw pairs from the generator while training instead of --data")
    source.add_argument("--directions", default=None, help="on the fly: directions.pt from `saliency discover` (or an imported format)")
    source.add_argument("--index", default="auto", help="on the fly: background direction row, or 'auto' (the file's recorded choice)")
    source.add_argument("--sign", default="auto", help="on the fly: 1 or -1, the way to shift; auto: as `saliency synthesize` chooses")
    add_mask_rule_arguments(parser)
    add_generator_arguments(parser, default=None)

    parser.add_argument("--out", default="outputs/train-segmenter", help="output folder")
    train = parser.add_argument_group("training")
    train.add_argument("--steps", type=int, default=12_000, help="optimiser steps (papers: 12000)")
    train.add_argument("--batch-size", type=int, default=96, help="pairs per step, summed over DDP processes (papers: 95)")
    train.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    train.add_argument("--lr-decay", type=float, default=0.2, help="learning-rate factor every --lr-decay-every steps")
    train.add_argument("--lr-decay-every", type=int, default=8000, help="steps between learning-rate decays (0: constant)")
    train.add_argument("--dice-weight", type=float, default=0.0, help="weight of a soft-dice term added to BCE")
    train.add_argument("--image-size", type=int, default=128, help="square training crop size in pixels")
    train.add_argument("--encoder", default="resnet18", help="smp encoder (resnet18, resnet34, mobilenet_v2, efficientnet-b0, tu-<timm name>, ...)")
    train.add_argument("--encoder-weights", default=None,
                       help="pretrained encoder weights, e.g. imagenet (needs a download from the Hugging Face hub); default: random init")
    train.add_argument("--encoder-depth", type=int, default=5, help="UNet levels (1-5)")
    train.add_argument("--decoder-channels", type=_int_list, default=None, help="comma-separated decoder widths, one per level (default: 256,128,64,32,16)")
    train.add_argument("--no-augment", dest="augment", action="store_false", help="no random crop, flip or colour jitter")
    train.add_argument("--crop-scale", type=_float_pair, default=(0.5, 1.0), help="area range of the random resized crop, 'low,high'")
    train.add_argument("--val-fraction", type=float, default=0.01, help="share of a pairs folder held out for validation (chosen by key)")
    train.add_argument("--val-pairs", type=int, default=1000, help="held-out pairs: cap for a folder, count drawn on the fly")
    train.add_argument("--val-every", type=int, default=1000, help="steps between validations")
    train.add_argument("--log-every", type=int, default=100, help="steps between loss log rows")
    train.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    train.add_argument("--no-amp", dest="amp", action="store_false", help="full precision on CUDA too")
    train.add_argument("--workers", type=int, default=4, help="data-loader processes for --data")
    train.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args):
    import torch

    import saliency
    from discovery.errors import UserError
    from saliency.commands.common import generator_options

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be at least 1")
        torch.set_num_threads(args.threads)
    if args.on_the_fly == (args.data is not None):
        raise UserError("give exactly one source of pairs: --data DIR or --on-the-fly (with --directions)")
    if args.on_the_fly and args.directions is None:
        raise UserError("--on-the-fly needs --directions FILE (directions.pt from `saliency discover`)")
    on_the_fly = {}
    if args.on_the_fly:
        on_the_fly = dict(directions=args.directions, generator=args.generator, weights=args.weights,
                          generator_options=generator_options(args), index=args.index, sign=args.sign, rule=args.rule,
                          rule_options=mask_rule_options(args))
    saliency.train_segmenter(
        args.out, data=args.data, **on_the_fly, steps=args.steps, batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay,
        lr_decay_every=args.lr_decay_every, dice_weight=args.dice_weight, image_size=args.image_size, encoder=args.encoder,
        encoder_weights=args.encoder_weights, encoder_depth=args.encoder_depth, decoder_channels=args.decoder_channels,
        augment=args.augment, crop_scale=args.crop_scale, val_fraction=args.val_fraction, val_pairs=args.val_pairs,
        val_every=args.val_every, log_every=args.log_every, checkpoint_every=args.checkpoint_every, resume=args.resume,
        seed=args.seed, device=args.device, amp=args.amp, workers=args.workers, progress=args.progress, ctx=args.ctx,
    )


register_command(NAME, HELP, add_arguments, run, DESCRIPTION)
