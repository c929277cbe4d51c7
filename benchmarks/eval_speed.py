"""Images per second of ``saliency evaluate --predictions`` against pysodmetrics run image by image.

Writes N synthetic image / mask / saliency-map triples (about 300x400 px, PNG maps) once, then times
alternately, best of --repeat:

* ``saliency evaluate --predictions`` end to end through the command line (reading, every metric of the
  protocol, the report with its PNGs), with --workers processes;
* the metric phase alone of the same run (``results.json`` timing);
* pysodmetrics 1.6 image by image in one process for the toolbox set it provides (Fmeasure, MAE,
  Smeasure, Emeasure, WeightedFmeasure, FmeasureV2 with dynamic IoU), reading the same files -- it has
  no max_f_beta / IoU@0.5, so the reference does less work than ours;
* the same pysodmetrics loop split over --workers processes.

Wall-clock rates are only meaningful on an otherwise idle machine; the file also records the CPU seconds
of every run (main process and worker processes) and the load average, and projects each rate onto
--workers idle cores as images / (main CPU + worker CPU / workers). On a shared machine that
projection is the number to compare.

Usage: python benchmarks/eval_speed.py [--n 300] [--workers 2] [--repeat 3] [--out benchmarks/results/eval_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_data(folder: Path, n: int, seed: int = 0) -> None:
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    for sub in ("set/images", "set/masks", "preds"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = int(rng.integers(280, 321)), int(rng.integers(380, 421))
        yy, xx = np.mgrid[:h, :w]
        gt = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
            ry, rx = rng.uniform(0.08, 0.3) * h, rng.uniform(0.08, 0.3) * w
            gt |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        pred = gaussian_filter(gt.astype(np.float32), rng.uniform(2, 10)) * rng.uniform(0.6, 1) + rng.normal(0, 0.08, (h, w))
        image = (rng.random((h, w, 3)) * 80 + gt[..., None] * 120).astype(np.uint8)
        stem = f"{i:05d}"
        Image.fromarray(image).save(folder / "set/images" / f"{stem}.jpg", quality=85)
        Image.fromarray(gt.astype(np.uint8) * 255).save(folder / "set/masks" / f"{stem}.png")
        Image.fromarray(np.round(np.clip(pred, 0, 1) * 255).astype(np.uint8)).save(folder / "preds" / f"{stem}.png")


class Clock:
    """Wall seconds and CPU seconds of this process and of the worker processes it waited for."""

    def __enter__(self):
        import resource

        self._self = resource.getrusage(resource.RUSAGE_SELF)
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import resource

        self.wall = time.perf_counter() - self._wall
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_main = (s.ru_utime + s.ru_stime) - (self._self.ru_utime + self._self.ru_stime)
        self.cpu_workers = (c.ru_utime + c.ru_stime) - (self._children.ru_utime + self._children.ru_stime)

    def projected(self, cores: int) -> float:
        """Seconds on ``cores`` idle cores: the main process's CPU plus the workers' CPU shared out."""
        return self.cpu_main + self.cpu_workers / cores

    def record(self, cores: int) -> dict:
        return {"wall": self.wall, "cpu_main": self.cpu_main, "cpu_workers": self.cpu_workers, "projected": self.projected(cores)}


def run_ours(folder: Path, workers: int) -> dict:
    from saliency.cli import main

    out = folder / "out"
    shutil.rmtree(out, ignore_errors=True)
    with Clock() as clock:
        code = main(["evaluate", "--dataset", str(folder / "set"), "--predictions", str(folder / "preds"), "--out", str(out), "--no-progress", "--workers", str(workers)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    return {**clock.record(workers), "metric_wall": results["timing"]["seconds"], "metrics": results["metrics"]}


def _pysod_chunk(pairs: list[tuple[str, str]]) -> dict:
    from PIL import Image

    import py_sod_metrics as P

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = [P.Fmeasure(), P.MAE(), P.Smeasure(), P.Emeasure(), P.WeightedFmeasure(), P.FmeasureV2({"iou": P.IOUHandler(with_dynamic=True, with_adaptive=False)})]
        for pred_path, mask_path in pairs:
            pred = np.asarray(Image.open(pred_path).convert("L")) / 255.0
            gt = np.asarray(Image.open(mask_path).convert("L")) >= 128
            for metric in metrics:
                metric.step(pred, gt, normalize=False)
    return {"mae": float(metrics[1].get_results()["mae"]), "s_measure": float(metrics[2].get_results()["sm"])}


def run_pysodmetrics(folder: Path, workers: int) -> dict:
    stems = sorted(p.stem for p in (folder / "preds").iterdir())
    pairs = [(str(folder / "preds" / f"{s}.png"), str(folder / "set/masks" / f"{s}.png")) for s in stems]
    with Clock() as clock:
        if workers <= 1:
            _pysod_chunk(pairs)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            chunks = [pairs[i::workers] for i in range(workers)]
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                list(pool.map(_pysod_chunk, chunks))
    return clock.record(max(workers, 1))


def machine() -> dict:
    """The shared machine description plus the versions the metrics run on."""
    from importlib.metadata import version

    import numpy
    import scipy

    info = machine_info()
    info.update(numpy=numpy.__version__, scipy=scipy.__version__, pysodmetrics=version("pysodmetrics"),
                opencv=version("opencv-python-headless"))
    return info


def markdown(result: dict) -> str:
    m, w = result["machine"], result["workers"]
    wall, rate, proj = result["wall_seconds_best"], result["images_per_second_wall"], result["images_per_second_projected"]
    load = result["load_average_before_after"][0][0]
    rows = [
        ("saliency evaluate --predictions, end to end", "ours_end_to_end"),
        ("saliency evaluate --predictions, metric phase", "ours_metric_phase"),
        ("pysodmetrics image by image, 1 process", "pysodmetrics_serial"),
        (f"pysodmetrics image by image, {w} processes", "pysodmetrics_parallel"),
    ]
    lines = [
        "# Evaluation speed",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cpus_usable', m.get('cpus'))} cores; numpy {m.get('numpy')}, scipy {m.get('scipy')}, "
        f"OpenCV {m.get('opencv')}, pysodmetrics {m.get('pysodmetrics')}; {result['created']}; load average {load:.1f} at the start.",
        f"{result['images']} images of {result['image_size']}; ours with {w} worker processes; best of {result['repeat']} alternating rounds.",
        f"Projected: images / (main-process CPU + worker CPU / {w}), the rate on {w} idle cores.",
        "",
        "| run | wall s | images/s (wall) | images/s (projected) |",
        "| --- | --- | --- | --- |",
    ]
    for label, key in rows:
        projected = f"{proj[key]:.1f}" if key in proj else "-"
        lines.append(f"| {label} | {wall[key]:.2f} | {rate[key]:.1f} | {projected} |")
    sp, pp = result["speedup_vs_pysodmetrics_serial"], result["speedup_vs_pysodmetrics_parallel"]
    lines += [
        "",
        f"Speed-up over pysodmetrics image by image (target 5x): {sp['projected_end_to_end']:.1f}x projected, "
        f"{sp['wall_end_to_end']:.1f}x wall end to end, {sp['wall_metric_phase']:.1f}x wall metric phase. "
        f"Over pysodmetrics on {w} processes: {pp['projected_end_to_end']:.1f}x projected, {pp['wall_end_to_end']:.1f}x wall.",
        "pysodmetrics runs only the toolbox metrics it provides (no max_f_beta, IoU / accuracy at 0.5); ours computes all of them and writes the report.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="images")
    parser.add_argument("--workers", type=int, default=2, help="processes for ours and for the parallel reference")
    parser.add_argument("--repeat", type=int, default=3, help="alternating timed rounds; the best of each is kept")
    parser.add_argument("--data", default=None, help="keep the generated data here (default: a temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_speed.json"))
    args = parser.parse_args(argv)

    folder = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="eval-speed-"))
    try:
        if not (folder / "preds").is_dir() or len(list((folder / "preds").iterdir())) != args.n:
            shutil.rmtree(folder / "set", ignore_errors=True)
            shutil.rmtree(folder / "preds", ignore_errors=True)
            write_data(folder, args.n)
        load_before = os.getloadavg()
        runs = {"ours": [], "pysodmetrics_serial": [], "pysodmetrics_parallel": []}
        for _ in range(args.repeat):
            runs["ours"].append(run_ours(folder, args.workers))
            runs["pysodmetrics_serial"].append(run_pysodmetrics(folder, 1))
            runs["pysodmetrics_parallel"].append(run_pysodmetrics(folder, args.workers))
        best = {
            "ours_end_to_end": min(r["wall"] for r in runs["ours"]),
            "ours_metric_phase": min(r["metric_wall"] for r in runs["ours"]),
            "pysodmetrics_serial": min(r["wall"] for r in runs["pysodmetrics_serial"]),
            "pysodmetrics_parallel": min(r["wall"] for r in runs["pysodmetrics_parallel"]),
        }
        projected = {
            "ours_end_to_end": min(r["projected"] for r in runs["ours"]),
            "pysodmetrics_serial": min(r["projected"] for r in runs["pysodmetrics_serial"]),
            "pysodmetrics_parallel": min(r["projected"] for r in runs["pysodmetrics_parallel"]),
        }
        rate = {k: args.n / v for k, v in best.items()}
        rate_projected = {k: args.n / v for k, v in projected.items()}
        for run in runs["ours"]:
            run.pop("metrics")
        result = {
            "benchmark": "saliency evaluate --predictions vs pysodmetrics image by image",
            "images": args.n,
            "image_size": "280-320 x 380-420 px, uint8 PNG maps, JPEG images, PNG masks",
            "workers": args.workers,
            "repeat": args.repeat,
            "wall_seconds_best": best,
            "images_per_second_wall": rate,
            "projected_seconds_on_idle_cores": projected,
            "images_per_second_projected": rate_projected,
            "speedup_vs_pysodmetrics_serial": {
                "wall_end_to_end": rate["ours_end_to_end"] / rate["pysodmetrics_serial"],
                "wall_metric_phase": rate["ours_metric_phase"] / rate["pysodmetrics_serial"],
                "projected_end_to_end": rate_projected["ours_end_to_end"] / rate_projected["pysodmetrics_serial"],
            },
            "speedup_vs_pysodmetrics_parallel": {
                "wall_end_to_end": rate["ours_end_to_end"] / rate["pysodmetrics_parallel"],
                "projected_end_to_end": rate_projected["ours_end_to_end"] / rate_projected["pysodmetrics_parallel"],
            },
            "target": "5x pysodmetrics image by image on 2 cores",
            "runs": runs,
            "load_average_before_after": [list(load_before), list(os.getloadavg())],
            "machine": machine(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    finally:
        if not args.data:
            shutil.rmtree(folder, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"{'':28s} {'wall s':>8s} {'img/s':>8s} {'projected img/s on ' + str(args.workers) + ' idle cores':>34s}")
    for key in best:
        projected_rate = f"{rate_projected[key]:8.1f}" if key in rate_projected else "-"
        print(f"{key:28s} {best[key]:8.2f} {rate[key]:8.1f} {projected_rate:>34s}")
    sp, pp = result["speedup_vs_pysodmetrics_serial"], result["speedup_vs_pysodmetrics_parallel"]
    print(f"speed-up vs pysodmetrics image by image: {sp['wall_end_to_end']:.1f}x wall end to end, {sp['wall_metric_phase']:.1f}x wall metric phase, "
          f"{sp['projected_end_to_end']:.1f}x projected; vs pysodmetrics on {args.workers} processes: {pp['wall_end_to_end']:.1f}x wall, {pp['projected_end_to_end']:.1f}x projected")
    print(f"load average before / after: {result['load_average_before_after']}")
    print(f"written {out}")
    return result


if __name__ == "__main__":
    main()
