"""``saliency directions show|export FILE``: what a directions file holds, and a plain matrix out of it."""

from __future__ import annotations

from saliency.commands.registry import register_command

NAME = "directions"
HELP = "show a directions file (any supported format) or export it as a plain .npy / .pt matrix"
DESCRIPTION = """show FILE     print the generator, method, matrix size, shift scale (what a shift of 1 means),
              the recorded background direction, labels and per-direction statistics.
export FILE   write the (K, dim_z) matrix as --format npy or pt to --out.
FILE is directions.pt, a plain .npy/.pt vector or matrix, a GANLatentDiscovery deformator
(deformator_*.pt beside args.json) or a GANSpace .npz; foreign files need --generator NAME."""


def add_arguments(parser):
    parser.add_argument("action", choices=("show", "export"), help="show or export")
    parser.add_argument("file", help="directions file")
    parser.add_argument("--generator", default=None, help="generator of a foreign file (it does not say)")
    parser.add_argument("--format", choices=("npy", "pt"), default="npy", help="export: file format")
    parser.add_argument("--out", default=None, help="export: output file (default: FILE with the new suffix)")


def describe(directions) -> list[str]:
    """Human-readable lines about a Directions (``saliency directions show``)."""
    norms = directions.matrix.norm(dim=1)
    scale = directions.shift_scale
    lines = [
        f"generator        {directions.generator}" + (f" {directions.generator_options}" if directions.generator_options else ""),
        f"method           {directions.method}" + (f" (imported from {directions.manifest['imported_from']})"
                                                     if directions.manifest.get("imported_from") else ""),
        f"directions       {directions.count} x dim_z {directions.dim_z}",
        f"row norms        {float(norms.min()):.4g} .. {float(norms.max()):.4g}",
        f"shift scale      {scale:g}: a shift of t moves the latent by t x the row (|row| x t in latent units); charts span "
        f"+/-{scale:g}; the mask rules' paper shifts (lighting 5, intensity 26) are scaled by {scale:g}/6",
    ]
    if directions.background is not None:
        b = directions.background
        lines.append(f"background       direction {b['index']}, sign {b['sign']:+d} dims the background (chosen by {b.get('source')}"
                     + (f", score {b['score']:.3f}" if b.get("score") is not None else "") + ")")
    else:
        lines.append("background       not recorded (synthesize --index auto will rank the directions)")
    if directions.labels:
        lines.append("labels           " + ", ".join(f"{k}: {v}" for k, v in sorted(directions.labels.items())))
    for key, values in sorted(directions.stats.items()):
        if isinstance(values, list) and len(values) == directions.count and all(isinstance(v, (int, float)) for v in values):
            shown = ", ".join(f"{v:.3g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
            lines.append(f"stats.{key:<11s} {shown}" if len(key) >= 11 else f"stats.{key:<11s}{shown}")
    return lines


def run(args):
    from pathlib import Path

    import numpy as np

    from discovery.directions import Directions
    from discovery.errors import UserError
    from discovery.io import atomic_torch_save, atomic_write_bytes

    directions = Directions.load(args.file, args.generator)
    if args.action == "show":
        print("\n".join(describe(directions)))
        return
    out = Path(args.out) if args.out else Path(args.file).with_suffix(f".{args.format}")
    if out.resolve() == Path(args.file).resolve():
        raise UserError(f"--out {out}: would overwrite the input; choose another file")
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out}: is a folder, expected a file name")
    matrix = directions.matrix.numpy()
    if args.format == "npy":
        import io

        buffer = io.BytesIO()
        np.save(buffer, matrix, allow_pickle=False)
        atomic_write_bytes(buffer.getvalue(), out)
    else:
        atomic_torch_save(directions.matrix.clone(), out)
    print(f"wrote the {directions.count} x {directions.dim_z} matrix to {out}")


register_command(NAME, HELP, add_arguments, run, DESCRIPTION)
