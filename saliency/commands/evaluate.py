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


def _default_out(args, dataset) -> str:
    from pathlib import Path

    if args.checkpoint:
        tag = Path(args.checkpoint).resolve().parent.name or "checkpoint"
    elif args.predictions:
        tag = Path(args.predictions).resolve().name
    else:
        tag = args.baseline
    return str(Path(DEFAULT_OUT) / f"{dataset.name}-{tag}")


def run(args):
    from pathlib import Path

    from discovery.errors import UserError
    from saliency.datasets import open_dataset
    from saliency.evaluation import evaluate_prediction_folder, evaluate_predictor

    if args.short_side is not None and args.short_side < 0:
        raise UserError(f"--short-side {args.short_side}: must be positive (or 0 for full size)")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be at least 1")
    if args.predictions and args.save_predictions:
        raise UserError("--save-predictions applies to --checkpoint and --baseline; --predictions are saved already")
    if not args.predictions and args.resize_predictions:
        raise UserError("--resize-predictions applies to --predictions only (model and baseline maps are always resized to the mask)")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise UserError(f"--checkpoint {args.checkpoint}: file not found")
    dataset = open_dataset(args.dataset, args.root, args.split, download=not args.no_download)
    out = Path(args.out or _default_out(args, dataset))
    normalize = "minmax" if args.minmax_normalize else "none"
    common = dict(workers=args.workers, progress=not args.no_progress)

    if args.predictions:
        results = evaluate_prediction_folder(args.predictions, dataset, out, name=args.name, resize=args.resize_predictions, normalize=normalize, **common)
    elif args.baseline:
        from saliency.baselines import get_baseline

        results = evaluate_predictor(
            get_baseline(args.baseline), dataset, out, name=args.name or args.baseline, short_side=None,
            save_predictions=args.save_predictions, normalize=normalize, source={"kind": "baseline", "baseline": args.baseline}, **common,
        )
    else:
        try:
            from saliency.segmenter import load_segmenter
        except ModuleNotFoundError as exc:
            if exc.name != "saliency.segmenter":
                raise
            raise UserError("--checkpoint needs saliency.segmenter, which this installation lacks") from None
        from discovery.runtime import resolve_device

        segmenter = load_segmenter(args.checkpoint, resolve_device(args.device))
        short_side = args.short_side or None
        results = evaluate_predictor(
            segmenter.predict, dataset, out, name=args.name or f"segmenter ({Path(args.checkpoint).name})", short_side=short_side,
            save_predictions=args.save_predictions, normalize=normalize, source={"kind": "checkpoint", "path": str(args.checkpoint)}, **common,
        )

    m = results["metrics"]
    print(
        f"{results['name']} on {dataset.name} ({len(dataset)} images): max_f_beta {m['max_f_beta']:.3f}  IoU {m['iou']:.3f}  "
        f"accuracy {m['accuracy']:.3f}  MAE {m['mae']:.3f}  S {m['s_measure']:.3f}  wF {m['weighted_f']:.3f}"
    )
    print(f"report: {results['files']['markdown']}")
