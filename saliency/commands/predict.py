"""``saliency predict``: run a trained segmenter on photos (calls ``saliency.predict``)."""

from __future__ import annotations

from saliency.commands.common import add_tta_argument
from saliency.commands.registry import register_command

NAME = "predict"
HELP = "run a trained segmenter on your photos: cut-outs, masks, saliency maps, overlays"
DESCRIPTION = """Run segmenter.pt on image files, folders (--recursive: sub-folders too) or glob patterns.
Writes OUT/<stem>_<type>.png for each photo and requested --type (sub-folders of a folder input
are kept), every output at the photo's own size and orientation (EXIF applied):
  map      8-bit soft saliency map        mask     binary mask at --threshold (0/255)
  rgba     the photo with the mask as alpha (--soft-alpha: the soft map)
  overlay  the photo with the object tinted and outlined
and OUT/predictions.json (each input, its outputs, size and time; the failures). A photo that
cannot be read is named on stderr and skipped; the command then exits 2 after writing the rest.
--skip-existing continues an interrupted run."""


def add_arguments(parser):
    from saliency.prediction import DEFAULT_TYPES, TYPES
    from saliency.refine import REFINERS

    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("--checkpoint", required=True, help="segmenter.pt written by `saliency train-segmenter`")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--type", dest="types", default=",".join(DEFAULT_TYPES),
                        help=f"comma-separated subset of {','.join(TYPES)}, or all")
    parser.add_argument("--threshold", type=float, default=0.5, help="mask = map >= threshold (the papers' protocol)")
    parser.add_argument("--soft-alpha", action="store_true", help="rgba: the soft map as alpha instead of the binary mask")
    parser.add_argument("--short-side", type=int, default=None,
                        help="predict at this shorter side (default: the checkpoint's training resolution; 0: full size)")
    parser.add_argument("--refine", choices=REFINERS.names(), default="none",
                        help="refine each map with the photo (bilateral solver, dense CRF, largest components)")
    add_tta_argument(parser)
    parser.add_argument("--batch-size", type=int, default=8, help="photos of one size per forward pass")
    parser.add_argument("--recursive", action="store_true", help="folders: include their sub-folders")
    parser.add_argument("--skip-existing", action="store_true", help="skip photos whose outputs all exist (continue an interrupted run)")
    parser.add_argument("--workers", type=int, default=None, help="decoding / encoding threads (default: from the core count)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args):
    import saliency

    saliency.predict(
        args.inputs, checkpoint=args.checkpoint, out=args.out, types=args.types, threshold=args.threshold, soft_alpha=args.soft_alpha,
        short_side="auto" if args.short_side is None else (args.short_side or None), refine=args.refine, tta=args.tta, batch_size=args.batch_size,
        recursive=args.recursive, skip_existing=args.skip_existing, workers=args.workers, device=args.device, progress=args.progress,
    )


register_command(NAME, HELP, add_arguments, run, DESCRIPTION)
