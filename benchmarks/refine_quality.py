"""Each refinement (``--refine``) on the Weizmann horse photos with the demo's segmenter.

For none / components / bilateral / crf, ``saliency.evaluate`` (the papers' protocol: max_f_beta,
IoU and accuracy at 0.5, MAE) on the validation split (30 photos carved from train, see
data/manifests/weizmann-horse.json) and on the held-out test split, at the demo's short side (64),
with the refiners' published settings (TokenCut's bilateral solver, the common dense-CRF
settings; nothing tuned). Seconds per image are the predictor's (the UNet plus the refinement).

Usage: python benchmarks/refine_quality.py [--checkpoint outputs/demo/train-segmenter/segmenter.pt] [--short-side 64]
Writes benchmarks/results/refine.json and refine.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
METHODS = ("none", "components", "bilateral", "crf")
METRICS = ("iou", "max_f_beta", "accuracy", "mae")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "outputs" / "demo" / "train-segmenter" / "segmenter.pt"))
    parser.add_argument("--short-side", type=int, default=64)
    parser.add_argument("--splits", default="val,test")
    args = parser.parse_args()

    import saliency

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for split in args.splits.split(","):
            for method in METHODS:
                results = saliency.evaluate("weizmann-horse", out=Path(work) / f"{split}-{method}", checkpoint=args.checkpoint, split=split,
                                            short_side=args.short_side, refine=method, progress=False, workers=1, device="cpu")
                count = results["dataset"]["count"]
                rows.append({"split": split, "refine": method, **{m: results["metrics"][m] for m in METRICS},
                             "seconds_per_image": results["timing"]["predict_seconds"] / count, "images": count})
                print(f"{split:5s} {method:10s} " + "  ".join(f"{m} {rows[-1][m]:.3f}" for m in METRICS)
                      + f"  {rows[-1]['seconds_per_image'] * 1000:.0f} ms/img", flush=True)
    result = {"benchmark": "refine_quality", "checkpoint": args.checkpoint, "short_side": args.short_side, "rows": rows,
              "machine": machine_info("cpu"), "command": "python " + " ".join(sys.argv)}
    out = ROOT / "benchmarks" / "results"
    (out / "refine.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Refinement of the demo segmenter's maps (`--refine`)", "",
             f"Command: `{result['command']}` (checkpoint `{Path(args.checkpoint).relative_to(ROOT) if Path(args.checkpoint).is_relative_to(ROOT) else args.checkpoint}`, "
             f"short side {args.short_side}). Machine: {result['machine']['cpu']}, {result['machine']['cpus_usable']} cores, "
             f"torch {result['machine']['torch']}, {result['machine']['created']}.",
             "Settings are the published ones (nothing tuned); validation = 30 photos carved from train, test = the 100 held-out photos.", "",
             "| split | refine | IoU | max_f_beta | accuracy | MAE | ms / image |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['split']} | {row['refine']} | {row['iou']:.3f} | {row['max_f_beta']:.3f} | {row['accuracy']:.3f} | "
                     f"{row['mae']:.3f} | {row['seconds_per_image'] * 1000:.0f} |")
    (out / "refine.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
