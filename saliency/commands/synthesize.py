"""``saliency synthesize``: image/mask pairs from a generator's background direction (calls ``saliency.synthesize``)."""

from __future__ import annotations

from saliency.commands.common import add_generator_arguments, add_mask_rule_arguments, mask_rule_options
from saliency.commands.registry import register_command

NAME = "synthesize"
HELP = "write synthetic image/mask pairs (WebDataset shards or PNG folders) from a background direction"
DESCRIPTION = """\
Shift generated images along the background direction and turn each (image, shifted image)
into a saliency mask with a registered mask rule:
  intensity  Voynov & Babenko 2020: one large shift whitens the background; foreground is where
             the shifted image's luma stays under --threshold (0.95); kept if the mask area is
             in (--min-area, --max-area) = (0.05, 0.5). Default shift 26 (x shift_scale/6).
  lighting   Voynov, Morozov & Babenko 2021: shift 5 (x shift_scale/6); foreground is where the
             shifted image got brighter; components smaller than --component-ratio of the
             largest are dropped; kept if area < --max-area (0.5) and the shifted image's
             histogram has at least --bimodality (2) peaks.
--directions reads directions.pt or any imported format (a .npy/.pt vector or matrix, a
GANLatentDiscovery deformator, GANSpace .npz; then --generator names the generator).
--index auto takes the background direction recorded in the file.
Runs are deterministic per --seed and resumable (--resume); under torchrun every rank writes
its own shards: torchrun --nproc_per_node 4 -m saliency -- synthesize ... (the "--" keeps
torchrun from taking --n or --sign for abbreviations of its own options). Writes OUT/manifest.json (counts, rejection rate, settings) and OUT/preview.png.
"""


def add_arguments(parser):
    add_generator_arguments(parser, default=None)
    parser.add_argument("--directions", required=True, help="directions.pt from `saliency discover`, or an imported format")
    parser.add_argument("--index", default="auto", help="row of the background direction, or 'auto' (the file's recorded choice)")
    parser.add_argument("--sign", default="auto",
                        help="1 or -1: which way to shift; auto: the recorded sign (adapted to the rule), "
                             "unless on 64 probe latents (16-64 for small --n) the other sign's masks touch the image border clearly less")
    parser.add_argument("--n", "--pairs", dest="n", type=int, default=100_000,
                        help="pairs to write (all ranks together)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", choices=("shards", "png"), default="shards", help="WebDataset tar shards or PNG folders")
    add_mask_rule_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=64, help="candidates per generator call")
    parser.add_argument("--shard-size", type=int, default=1000, help="pairs per shard (and per resume unit)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--preview", type=int, default=16, help="pairs shown in OUT/preview.png (0: none)")
    parser.add_argument("--workers", type=int, default=None, help="host threads for masks and PNG encoding (default: cores - 1, at most 8)")
    parser.add_argument("--latents", default=None,
                        help="(N, dim_z) .npy / .pt of latents instead of N(0, I), e.g. encoder embeddings of your photos (E-BigBiGAN)")
    parser.add_argument("--latent-noise", type=float, default=0.2, help="with --latents: add this x N(0, I) (E-BigBiGAN: 0.2)")
    parser.add_argument("--latent-order", choices=("sample", "cycle"), default="sample",
                        help="with --latents: rows at random, or cycled in order")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args):
    import saliency
    from saliency.commands.common import generator_options

    saliency.synthesize(
        args.directions, args.out, generator=args.generator, weights=args.weights, generator_options=generator_options(args),
        index=args.index, sign=args.sign, n=args.n, rule=args.rule, rule_options=mask_rule_options(args), batch_size=args.batch_size,
        format=args.format, shard_size=args.shard_size, seed=args.seed, resume=args.resume, device=args.device,
        progress=args.progress, preview=args.preview, workers=args.workers, ctx=args.ctx, latents=args.latents,
        latent_noise=args.latent_noise, latent_order=args.latent_order,
    )


register_command(NAME, HELP, add_arguments, run, DESCRIPTION)
