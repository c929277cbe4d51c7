"""``saliency synthesize``: image/mask pairs from a generator's background direction."""

from __future__ import annotations

from saliency.commands.common import add_generator_arguments, add_mask_rule_arguments, shift_sign

NAME = "synthesize"
HELP = "write synthetic image/mask pairs (WebDataset shards or PNG folders) from a background direction"
DESCRIPTION = """\
Shift generated images along the background direction and turn each (image, shifted image)
into a saliency mask with one of two rules:
  intensity  Voynov & Babenko 2020: one large shift whitens the background; foreground is where
             the shifted image's luma stays under --threshold (0.95); kept if the mask area is
             in (--min-area, --max-area) = (0.05, 0.5). Default shift 26 (x shift_scale/6).
  lighting   Voynov, Morozov & Babenko 2021: shift 5 (x shift_scale/6); foreground is where the
             shifted image got brighter; components smaller than --component-ratio of the
             largest are dropped; kept if area < --max-area (0.5) and the shifted image's
             histogram has at least --bimodality (2) peaks.
Runs are deterministic per --seed and resumable (--resume); under torchrun every rank writes
its own shards: torchrun --nproc_per_node 4 -m saliency -- synthesize ... (the "--" keeps
torchrun from taking --n or --sign for abbreviations of its own options). Writes OUT/manifest.json (counts, rejection rate, settings) and OUT/preview.png.
"""


def add_arguments(parser):
    add_generator_arguments(parser, default=None)
    parser.add_argument("--directions", required=True, help="directions.pt written by `saliency discover`")
    parser.add_argument("--index", default="auto", help="row of the background direction, or 'auto' (background ranking)")
    parser.add_argument("--sign", type=shift_sign, default="auto",
                        help="1 or -1: which way to shift; auto: the background ranking's sign (adapted to the rule), "
                             "unless on 64 probe latents the other sign's masks touch the image border clearly less")
    parser.add_argument("--n", "--pairs", dest="n", type=int, default=100_000,
                        help="pairs to write (all ranks together)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", choices=("shards", "png"), default="shards", help="WebDataset tar shards or PNG folders")
    add_mask_rule_arguments(parser, "mask rule (unset options keep the rule's paper values)")
    parser.add_argument("--batch-size", type=int, default=64, help="candidates per generator call")
    parser.add_argument("--shard-size", type=int, default=1000, help="pairs per shard (and per resume unit)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--preview", type=int, default=16, help="pairs shown in OUT/preview.png (0: none)")
    parser.add_argument("--workers", type=int, default=None, help="host threads for masks and PNG encoding (default: cores - 1, at most 8)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args):
    from discovery.directions import Directions
    from saliency.synthesis import rank_context

    directions = Directions.load(args.directions)
    ctx = rank_context()
    try:
        _run(args, directions, ctx)
    finally:
        ctx.close()


def _run(args, directions, ctx):
    import os

    from discovery.runtime import pin_cuda_device, resolve_device
    from saliency.commands.common import background_direction_choice, generator_for_directions, mask_rule_from_args
    from saliency.synthesis import synthesize

    device = pin_cuda_device(resolve_device(args.device), ctx.local_rank if ctx.world_size > 1 else None)
    generator, options = generator_for_directions(args, directions, device)
    rule = mask_rule_from_args(args)
    index, sign, choice = background_direction_choice(args, generator, directions, rule, device)
    extra = {"directions": {"path": os.path.abspath(args.directions)}, **choice}
    manifest = synthesize(
        generator, directions, index, args.out, n=args.n, rule=rule, batch_size=args.batch_size,
        format=args.format, shard_size=args.shard_size, seed=args.seed, resume=args.resume, device=device,
        progress=args.progress, sign=sign, preview=args.preview, workers=args.workers,
        generator_options=options, extra_manifest=extra,
    )
    if manifest.get("format"):
        rate = manifest.get("rejection_rate")
        speed = manifest.get("timing", {}).get("pairs_per_second")
        print(f"wrote {manifest['pairs']} pairs to {args.out} (direction {index}, sign {sign:+d}, shift {manifest['shift']:g}, "
              f"rule {manifest['rule']['name']}, rejection rate {rate:.1%}"
              + (f", {speed:.0f} pairs/s" if speed else "") + ")")
