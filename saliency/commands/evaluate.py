"""``saliency evaluate``: score a segmenter, a folder of saved saliency maps, or a baseline on a dataset."""

from __future__ import annotations

NAME = "evaluate"
HELP = "evaluate a segmenter checkpoint, saved saliency maps or a baseline on a salient-object dataset"
DESCRIPTION = """Score saliency maps against ground-truth masks with every metric of the protocol: the GAN-saliency
papers' max F_beta, IoU and accuracy (beside their published figures), and the salient-object toolbox set
(max / mean / adaptive F, MAE, S-measure, E-measure, weighted F, max IoU). Writes OUT/results.json,
results.md, pr_curve.png, f_threshold.png, worst_best.png and summary.json.

--dataset is ECSSD, DUTS-TE, DUT-OMRON, SOD, weizmann-horse (read from --root, default data/<name>;
downloaded from the official site when missing and online) or any folder with an image and a mask
sub-folder matched by file stem. --predictions maps are matched to the masks by file stem too."""

from saliency.commands.common import add_tta_argument
from saliency.commands.registry import register_command

DEFAULT_OUT = "outputs/evaluate"


def add_arguments(parser):
    parser.add_argument("--dataset", required=True, help="ECSSD, DUTS-TE, DUT-OMRON, SOD, weizmann-horse, or a folder with images/ and masks/")
    parser.add_argument("--root", default=None, help="where a known dataset lives; unset: data/<name>")
    parser.add_argument("--split", default=None, help="split list to use; unset: the dataset's default (weizmann-horse: test); 'all': every image")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", default=None, help="segmenter.pt written by `saliency train-segmenter`")
    source.add_argument("--predictions", default=None, help="folder of saliency maps (PNG/JPG uint8 or .npy float in [0, 1]) named like the masks")
    source.add_argument("--baseline", default=None, choices=("all-foreground", "center-prior", "classical"), help="a reference predictor instead of a model")
    parser.add_argument("--out", default=None, help=f"output folder; unset: {DEFAULT_OUT}/<dataset>-<source>")
    parser.add_argument("--name", default=None, help="label of this run in the report; unset: named after the source")
    parser.add_argument("--short-side", type=int, default=128, help="--checkpoint: predict at this shorter side, then resize to the mask (0: full size)")
    parser.add_argument("--save-predictions", action="store_true", help="--checkpoint/--baseline: also write OUT/predictions/<stem>.png")
    parser.add_argument("--resize-predictions", action="store_true", help="--predictions: resize maps whose size differs from their mask instead of stopping with an error")
    parser.add_argument("--minmax-normalize", action="store_true", help="stretch each map to [0, 1] first, as the MATLAB toolbox does")
    parser.add_argument("--workers", type=int, default=None, help="processes computing the metrics; unset: all cores (at most 8), one below 24 images")
    parser.add_argument("--no-download", action="store_true", help="never download a missing dataset; say where to put it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from saliency.refine import REFINERS

    parser.add_argument("--refine", choices=REFINERS.names(), default="none",
                        help="--checkpoint/--baseline: refine each map with its photo (default: none, the papers' protocol)")
    add_tta_argument(parser, "--checkpoint's maps")


def run(args):
    import saliency

    saliency.evaluate(
        args.dataset, args.out, checkpoint=args.checkpoint, predictions=args.predictions, baseline=args.baseline, root=args.root,
        split=args.split, name=args.name, short_side=args.short_side, save_predictions=args.save_predictions,
        resize_predictions=args.resize_predictions, normalize="minmax" if args.minmax_normalize else "none", workers=args.workers,
        download=not args.no_download, progress=not args.no_progress, device=args.device, refine=args.refine,
        tta=args.tta,
    )


register_command(NAME, HELP, add_arguments, run, DESCRIPTION)
