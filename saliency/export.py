"""``saliency.export_segmenter``: the trained detector as a file that runs without this package.

The exported network takes RGB images as float32 (N, 3, H, W) in [0, 1] (H and W multiples of
``2 ** encoder_depth``; resize and pad as you like) and returns saliency probabilities (N, 1, H, W)
in [0, 1]: the ImageNet normalisation and the sigmoid are inside. ``onnx`` (opset 17, dynamic
batch and size; run it with ONNX Runtime) or ``torchscript`` (``torch.jit.load``). A JSON file
beside it (``FILE.json``) records that input convention and the training resolution.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from discovery.errors import UserError, library_call

FORMATS = ("onnx", "torchscript")


class ExportedSegmenter(nn.Module):
    """Normalisation + UNet + sigmoid: images in [0, 1] -> probabilities."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model((images - self.mean) / self.std))


@library_call
def export_segmenter(checkpoint, out, *, format: str = "onnx", opset: int = 17) -> dict:
    """Write ``checkpoint`` (segmenter.pt) as ``format`` to ``out``; returns the sidecar description."""
    import json
    import tempfile

    from discovery.io import atomic_write_bytes, write_json
    from saliency.segmenter import load_segmenter

    if format not in FORMATS:
        raise UserError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder, expected a file name")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create its folder ({exc.strerror or exc})") from None
    segmenter = load_segmenter(checkpoint, "cpu")
    module = ExportedSegmenter(segmenter.model, segmenter.mean, segmenter.std).eval().requires_grad_(False)
    side = segmenter.training_size
    example = torch.rand(1, 3, side, side)
    with tempfile.TemporaryDirectory(dir=out.parent) as folder:
        tmp = Path(folder) / out.name
        import warnings

        with warnings.catch_warnings():  # torch's deprecation notices of jit and the legacy exporter
            warnings.simplefilter("ignore")
            if format == "torchscript":
                torch.jit.save(torch.jit.trace(module, example, check_trace=False), str(tmp))
            else:
                torch.onnx.export(module, (example,), str(tmp), input_names=["images"], output_names=["saliency"], opset_version=opset,
                                  dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                                "saliency": {0: "batch", 2: "height", 3: "width"}}, dynamo=False)
        atomic_write_bytes(tmp.read_bytes(), out)
    description = {
        "format": format,
        "input": {"name": "images", "layout": "NCHW", "dtype": "float32", "range": [0, 1], "colour": "RGB",
                  "size_multiple": segmenter.multiple, "training_resolution": side},
        "output": {"name": "saliency", "layout": "N1HW", "range": [0, 1], "meaning": "probability of salient object"},
        "source": str(checkpoint),
        "segmenter_config": json.loads(json.dumps(segmenter.config, default=str)),
    }
    write_json(description, out.with_name(out.name + ".json"))
    return description
