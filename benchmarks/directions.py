"""Which background direction each discovery method gives on the embedded generator, and its masks.

For each method (SeFa, Hessian, GANSpace, Voynov-Babenko trained briefly, the optimised direction of
Melas-Kyriazi et al.): ``discovery.discover`` on horse-64, the direction the background chooser picks
(or, for the optimised method, the one it constructs), its chart, and 64 candidate pairs from
``saliency.synthesize`` with the rule that fits it (lighting for a single direction, two-direction
with the optimised pair), 3x3 smoothing as in the demo: the rejection rate and a preview of the masks.
No labels are used. Voynov-Babenko runs here for --voynov-steps only (the paper trains 1e5 steps on a
GPU), with 32 directions and the LeNet reconstructor, so its row shows the method working on a CPU
budget, not its converged directions.

Usage: python benchmarks/directions.py [--voynov-steps 1000]
Writes benchmarks/results/directions.md, directions.json and directions/<method>-{chart,pairs}.jpg.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voynov-steps", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=64)
    args = parser.parse_args()

    import discovery
    import saliency

    methods = {
        "sefa": {},
        "hessian": {"samples": 4},
        "ganspace": {"samples": 2048},
        "voynov": {"directions": 32, "steps": args.voynov_steps, "batch_size": 16, "reconstructor": "lenet", "rca_samples": 256,
                   "checkpoint_every": args.voynov_steps, "log_every": max(1, args.voynov_steps // 10)},
        "melas-kyriazi": {"edge_weight": 0.1},
    }
    results_dir = ROOT / "benchmarks" / "results"
    pictures = results_dir / "directions"
    pictures.mkdir(parents=True, exist_ok=True)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="directions-"))
    try:
        for method, options in methods.items():
            started = time.perf_counter()
            folder = work / method
            found = discovery.discover("horse-64", method=method, out=folder, charts=0, device="cpu", progress=False, **options)
            seconds = time.perf_counter() - started
            choice = found.background
            from discovery.charts import write_direction_charts

            write_direction_charts(discovery.create_generator("horse-64"), found, folder, count=1, order=[choice["index"]])
            rule = "two-direction" if choice.get("partner") is not None else "lighting"
            manifest = saliency.synthesize(folder / "directions.pt", folder / "pairs", n=args.pairs, rule=rule, rule_options={"smooth": 3},
                                           batch_size=32, preview=16, progress=False, device="cpu")
            chart = next((folder / "charts").glob(f"direction_{choice['index']:03d}.png"))
            from PIL import Image

            for source, name in ((chart, "chart"), (folder / "pairs" / "preview.png", "pairs")):  # JPEG: a tenth of the PNG's size
                Image.open(source).convert("RGB").save(pictures / f"{method}-{name}.jpg", quality=85)
            summary = json.loads((folder / "summary.json").read_text())
            rows.append({"method": method, "options": options, "directions": found.count, "chosen": choice["index"],
                         "dimming_sign": choice["sign"], "choice_source": choice["source"], "score": choice.get("score"),
                         "rule": rule, "sign_used": manifest["sign"], "rejection_rate": manifest["rejection_rate"],
                         "rca": summary.get("rca"), "discover_seconds": round(seconds, 1)})
            print(f"{method:14s} direction {choice['index']:3d} ({choice['source']}), {rule} rule, rejection "
                  f"{manifest['rejection_rate']:.1%}, {seconds:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine = machine_info("cpu")
    (results_dir / "directions.json").write_text(json.dumps({"rows": rows, "machine": machine, "command": "python " + " ".join(sys.argv)},
                                                            indent=2) + "\n")
    lines = ["# Background directions of the embedded generator, by method", "",
             f"Command: `python {' '.join(sys.argv)}`. Machine: {machine['cpu']}, {machine['cpus_usable']} cores, torch {machine['torch']}, "
             f"{machine['created']}. No labels used: the chooser scores directions on generated images only.", "",
             "| method | directions | chosen | chosen by | score | rule | rejection rate | RCA | discover s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        score = f"{r['score']:.3f}" if isinstance(r["score"], float) else "-"
        rca = f"{r['rca']:.3f}" if isinstance(r["rca"], float) else "-"
        lines.append(f"| {r['method']} | {r['directions']} | {r['chosen']} | {r['choice_source']} | {score} | {r['rule']} | "
                     f"{r['rejection_rate']:.1%} | {rca} | {r['discover_seconds']} |")
    lines += ["", "Each method's chosen direction (rows: latents; columns: shifts from -s to +s) and the masks its rule gives "
              "(image, mask pairs; 3x3 smoothing):", ""]
    for r in rows:
        lines += [f"## {r['method']}", "", f"![{r['method']} chart](directions/{r['method']}-chart.jpg)", "",
                  f"![{r['method']} pairs](directions/{r['method']}-pairs.jpg)", ""]
    (results_dir / "directions.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
