"""Images per second of ``saliency predict`` against the model-forward floor.

A folder of N same-size JPEG photos (the Weizmann horse photos resized to --size, a user's camera
folder in miniature) is written once. Then, alternately, best of --repeat:

* ``saliency.predict`` end to end (decoding, EXIF, resizing, the UNet, rgba + mask outputs encoded
  and written atomically, predictions.json), the library call the command makes;
* the floor: the same segmenter alone on the same photos already decoded and resized to the same
  input tensors, in batches of the same size (forward passes only).

Target (issue 15): predict reaches at least 0.8 of the floor for folders of same-size photos.
The segmenter is the demo's (``outputs/demo/train-segmenter/segmenter.pt``, or --checkpoint), or,
when there is none, a randomly initialised resnet18 UNet of the same architecture (speed does not
depend on the weights).

Usage: python benchmarks/predict_speed.py [--n 64] [--size 400x300] [--batch-size 8] [--device cpu] [--repeat 3] [--random-size 128]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HORSES = ROOT.parent / "shared" / "data" / "weizmann-horse" / "images"


def _checkpoint(path: str | None, folder: Path, random_size: int | None) -> tuple[Path, str]:
    if path:
        return Path(path), path
    demo = ROOT / "outputs" / "demo" / "train-segmenter" / "segmenter.pt"
    if demo.is_file() and not random_size:
        return demo, str(demo.relative_to(ROOT))
    from saliency.segmenter import build_segmenter, save_segmenter, segmenter_config

    torch.manual_seed(0)
    target = folder / "segmenter.pt"
    size = random_size or 64
    save_segmenter(build_segmenter("resnet18"), segmenter_config("resnet18", None, 5, None, size), target)
    return target, f"random resnet18 UNet, training size {size}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--size", default="400x300", help="photo size WxH")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--random-size", type=int, default=None,
                        help="time a randomly initialised resnet18 UNet of this training size (the papers': 128) instead of the demo's")
    parser.add_argument("--out", default=None, help="result file (default: benchmarks/results/predict_speed-<device>.json)")
    args = parser.parse_args()

    import saliency
    from discovery.runtime import resolve_device
    from PIL import Image
    from saliency.segmenter import load_segmenter

    device = resolve_device(args.device)
    width, height = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="predict-speed-"))
    try:
        photos = work / "photos"
        photos.mkdir()
        sources = sorted(HORSES.glob("*.jpg"))
        for i in range(args.n):
            Image.open(sources[i % len(sources)]).convert("RGB").resize((width, height)).save(photos / f"p{i:04d}.jpg", quality=90)
        checkpoint, described = _checkpoint(args.checkpoint, work, args.random_size)
        segmenter = load_segmenter(checkpoint, device)
        side = segmenter.training_size

        # The floor: forward passes on the prepared input tensors, same batches.
        decoded = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(photos.glob("*.jpg"))]
        prepared = torch.cat([segmenter.prepare(image, side)[0] for image in decoded])

        def floor() -> float:
            start = time.perf_counter()
            with torch.no_grad():
                for first in range(0, len(prepared), args.batch_size):
                    segmenter.forward(prepared[first : first + args.batch_size])
            if device.type == "cuda":
                torch.cuda.synchronize()
            return len(prepared) / (time.perf_counter() - start)

        def end_to_end() -> float:
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            saliency.predict(photos, checkpoint=segmenter, out=out, batch_size=args.batch_size, progress=False, device=device)
            return args.n / (time.perf_counter() - start)

        floor(), end_to_end()  # warm-up
        floors, predicts = [], []
        for _ in range(args.repeat):
            floors.append(floor())
            predicts.append(end_to_end())
        result = {
            "benchmark": "predict_speed",
            "photos": args.n, "photo_size": [width, height], "short_side": side, "batch_size": args.batch_size,
            "types": ["rgba", "mask"], "segmenter": described,
            "floor_images_per_second": round(max(floors), 2),
            "predict_images_per_second": round(max(predicts), 2),
            "ratio": round(max(predicts) / max(floors), 3),
            "target_ratio": 0.8,
            "all_runs": {"floor": [round(x, 2) for x in floors], "predict": [round(x, 2) for x in predicts]},
            "machine": machine_info(device),
            "command": "python " + " ".join(sys.argv),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    suffix = f"-{result['short_side']}px"
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"predict_speed-{device.type}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"predict {result['predict_images_per_second']} img/s, floor {result['floor_images_per_second']} img/s: "
          f"ratio {result['ratio']} (target {result['target_ratio']}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
