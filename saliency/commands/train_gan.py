"""``saliency train-gan``: train the small unconditional GAN on a folder of unlabelled images."""

from __future__ import annotations

NAME = "train-gan"
HELP = "train a small 64-px unconditional GAN (DiffAugment) on a folder of unlabelled images"
DESCRIPTION = """Train a small unconditional GAN on a few hundred unlabelled images (CPU-friendly).

The shipped default generator `horse-64` was made with (see discovery/weights/README.md):
  saliency train-gan --images ../shared/data/weizmann-horse/images \\
      --list ../shared/data/weizmann-horse/train.txt --out outputs/horse-gan \\
      --steps 20000 --width 32 --seed 0 --device cuda --export discovery/weights/horse64.pt
(about 0.27 s a step on 2 CPU cores, 40-60 steps a second on one H100.)

Only the images named in --list are used when it is given; otherwise every image of the folder
(a train.txt lying beside the images is NOT picked up silently). --out receives snapshot.pt
(resumable with --resume), stats.jsonl/csv, samples/grid-*.png, generator.pt (the shippable
file) and summary.json."""


def add_arguments(parser):
    parser.add_argument("--images", required=True, help="folder of training images (masks or labels are never read)")
    parser.add_argument("--list", default=None, help="file naming the images to use, one stem per line (e.g. DIR/../train.txt)")
    parser.add_argument("--out", default="outputs/train-gan", help="output folder (snapshots, logs, sample grids, generator.pt)")
    parser.add_argument("--steps", type=int, default=6000, help="generator updates")
    parser.add_argument("--batch-size", type=int, default=32, help="images per update")
    parser.add_argument("--lr-g", type=float, default=2e-4, help="Adam learning rate of the generator")
    parser.add_argument("--lr-d", type=float, default=2e-4, help="Adam learning rate of the discriminator")
    parser.add_argument("--width", type=int, default=32, help="base channel count of G and D")
    parser.add_argument("--diffaugment", default="color,translation,cutout", help="DiffAugment policy ('' for none)")
    parser.add_argument("--d-norm", default="spectral", choices=("spectral", "batch"), help="discriminator normalisation")
    parser.add_argument("--loss", default="hinge", choices=("hinge", "nonsaturating"), help="GAN loss")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="steps between snapshots")
    parser.add_argument("--sample-every", type=int, default=200, help="steps between sample grids")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its snapshot")
    parser.add_argument("--export", default=None, help="also write the final shippable generator file here")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args):
    import torch

    from discovery.errors import UserError
    from discovery.generators.horse_training import train_gan

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be at least 1")
        torch.set_num_threads(args.threads)
    if args.width < 4:
        raise UserError(f"--width {args.width}: must be at least 4")
    summary = train_gan(
        args.images,
        args.out,
        list_file=args.list,
        width=args.width,
        steps=args.steps,
        batch_size=args.batch_size,
        lr_g=args.lr_g,
        lr_d=args.lr_d,
        diffaugment=args.diffaugment,
        d_norm=args.d_norm,
        loss=args.loss,
        checkpoint_every=args.checkpoint_every,
        sample_every=args.sample_every,
        resume=args.resume,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        export=args.export,
    )
    return summary


from saliency.commands.registry import register_command  # noqa: E402

register_command(NAME, HELP, add_arguments, run, globals().get("DESCRIPTION"))
