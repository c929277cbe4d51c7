"""``saliency self-train``: adapt a segmenter to unlabelled photos (calls ``saliency.self_train``)."""

from __future__ import annotations

from saliency.commands.common import add_tta_argument
from saliency.commands.registry import register_command

NAME = "self-train"
HELP = "adapt a segmenter to unlabelled photos of the target domain (label, keep the confident, fine-tune; repeat)"
DESCRIPTION = """Each round labels the photos in --images with the current segmenter (refined with the photo,
--refine), keeps the --keep most confident plausible labels, and fine-tunes on them mixed with
synthetic pairs (--synthetic, a `saliency synthesize` folder). Masks are never read: only the
photos (and the names in --list). OUT/round-NN/ holds each round's labels (labels.json, the
kept photos and scores) and its train-segmenter run; OUT/segmenter.pt is the last round's.
--resume continues an interrupted run (bit for bit); --rounds may grow on resume."""


def add_arguments(parser):
    from saliency.refine import REFINERS

    parser.add_argument("--checkpoint", required=True, help="segmenter.pt to start from")
    parser.add_argument("--images", required=True, help="folder of unlabelled photos of the target domain")
    parser.add_argument("--list", dest="list_file", default=None, help="only the photos named here, one stem a line")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--rounds", type=int, default=3, help="label -> fine-tune rounds")
    parser.add_argument("--refine", choices=REFINERS.names(), default="bilateral", help="refinement of the labels")
    add_tta_argument(parser, "the labelling", default="flip")
    parser.add_argument("--keep", type=float, default=0.5, help="share of the photos kept as labels, most confident first")
    parser.add_argument("--min-area", type=float, default=0.05, help="labels covering this share of the photo or less are dropped")
    parser.add_argument("--max-area", type=float, default=0.8, help="labels covering this share or more are dropped")
    parser.add_argument("--synthetic", default=None, help="pairs folder from `saliency synthesize` mixed into every round")
    parser.add_argument("--synthetic-pairs", type=int, default=None, help="synthetic pairs mixed in (default: as many as kept photos)")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps per round")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate of the fine-tuning")
    parser.add_argument("--image-size", type=int, default=None, help="training crop size (default: the checkpoint's)")
    parser.add_argument("--workers", type=int, default=0, help="data-loader processes")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run(args):
    import saliency

    saliency.self_train(
        args.checkpoint, args.images, args.out, list_file=args.list_file, rounds=args.rounds, refine=args.refine, tta=args.tta, keep=args.keep,
        min_area=args.min_area, max_area=args.max_area, synthetic=args.synthetic, synthetic_pairs=args.synthetic_pairs, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, image_size=args.image_size, seed=args.seed, device=args.device, workers=args.workers,
        resume=args.resume, progress=args.progress,
    )


register_command(NAME, HELP, add_arguments, run, DESCRIPTION)
