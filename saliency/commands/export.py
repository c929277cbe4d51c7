"""``saliency export``: a trained segmenter as ONNX or TorchScript (calls ``saliency.export_segmenter``)."""

from __future__ import annotations

from saliency.commands.registry import register_command

NAME = "export"
HELP = "export a trained segmenter as ONNX or TorchScript, to run without this package"
DESCRIPTION = """Write segmenter.pt as an ONNX model (ONNX Runtime, opset 17, dynamic batch and size) or a
TorchScript module. Input: RGB float32 (N, 3, H, W) in [0, 1], H and W multiples of 2**depth (32
for the default UNet); output: probabilities (N, 1, H, W). FILE.json beside it says so."""


def add_arguments(parser):
    from saliency.export import FORMATS

    parser.add_argument("--checkpoint", required=True, help="segmenter.pt written by `saliency train-segmenter`")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="output format")
    parser.add_argument("--out", required=True, help="output file (e.g. segmenter.onnx)")


def run(args):
    from saliency.export import export_segmenter

    export_segmenter(args.checkpoint, args.out, format=args.format)
    print(f"wrote {args.out} ({args.format}) and {args.out}.json")


register_command(NAME, HELP, add_arguments, run, DESCRIPTION)
