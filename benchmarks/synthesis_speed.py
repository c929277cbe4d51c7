"""Pair synthesis speed against the generator-only bound.

A candidate pair costs two generator images, G(z) and G(z + r d); ``synthesize`` makes both in
one generator call on a batch of 2 x batch_size latents. The bound is the rate of those calls
alone (latents already on the device, nothing else running): no pipeline can write candidates
faster. The pipeline's rate counts every candidate it examined (kept or rejected) over the wall
time of the whole ``synthesize`` call (start-up, mask rule, PNG encoding, tar writing, the
final flush), so ratio = pipeline candidates/s / bound candidates/s; kept pairs/s is the
candidate rate times (1 - rejection rate). Each pipeline run is paired with a bound timing
just before it; the reported ratio is the median of the paired ratios. Target: ratio >= 0.85.
Per-stage single-thread costs give the ratio's limit on a machine with no spare core.

    python benchmarks/synthesis_speed.py                      # every available generator, this machine
    python benchmarks/synthesis_speed.py --generators procedural --pairs 4000 --batch-size 128

Writes ``benchmarks/results/synthesis_speed.json`` and ``.md`` (with the machine's description).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from discovery.directions import Directions  # noqa: E402
from discovery.generators import create_generator, list_generators  # noqa: E402
from discovery.io import write_json  # noqa: E402
from saliency.masks import IntensityMaskRule, LightingMaskRule  # noqa: E402
from saliency.synthesis import PairSynthesizer, synthesize  # noqa: E402
from machine import machine_info

# Per generator: a direction and a rule that keep a steady share of candidates, so that the
# stall guard never fires on untrained weights (random directions on tiny-dcgan and horse-64).
CASES = {
    "procedural": dict(resolution=32, rule=IntensityMaskRule(threshold=0.85)),
    "tiny-dcgan": dict(resolution=32, rule=LightingMaskRule(max_area=0.9, bimodality=0)),
    "horse-64": dict(resolution=64, rule=LightingMaskRule(max_area=0.9, bimodality=0)),
}


def directions_for(generator, name: str) -> tuple[Directions, int]:
    if name == "procedural":
        rows = torch.stack(list(generator.factor_directions.values()))
        return Directions(rows, generator=name, method="truth", shift_scale=3.0), 3
    basis, _ = torch.linalg.qr(torch.randn(generator.dim_z, generator.dim_z, generator=torch.Generator().manual_seed(0)))
    return Directions(basis.T, generator=name, method="random", shift_scale=6.0), 0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generator_bound(synthesizer: PairSynthesizer, batch_size: int, seconds: float) -> tuple[float, int]:
    """(candidate pairs per second of the generator calls alone, torch threads that gave it).

    On the CPU the best of every torch thread count, so that the bound is the generator's best
    on this machine whatever share of the cores the pipeline leaves it.
    """
    if synthesizer.device.type != "cpu":
        return _generator_rate(synthesizer, batch_size, seconds), torch.get_num_threads()
    threads = torch.get_num_threads()
    best = (0.0, threads)
    try:
        for count in range(1, threads + 1):
            torch.set_num_threads(count)
            best = max(best, (_generator_rate(synthesizer, batch_size, seconds / threads), count))
    finally:
        torch.set_num_threads(threads)
    return best


@torch.no_grad()
def _generator_rate(synthesizer: PairSynthesizer, batch_size: int, seconds: float) -> float:
    device = synthesizer.device
    z = synthesizer.generator.sample_latent(batch_size, torch.Generator().manual_seed(1)).to(device)
    for _ in range(3):
        synthesizer.generate(z)
    synchronize(device)
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 5:
        start = time.perf_counter()
        for _ in range(3):
            synthesizer.generate(z)
        synchronize(device)
        rates.append(3 * batch_size / (time.perf_counter() - start))
    rates.sort()
    return rates[len(rates) // 2]


def measure(name: str, *, pairs: int, batch_size: int, device: torch.device, storage: str, workers: int | None,
            repeats: int = 3) -> dict:
    case = CASES.get(name, dict(rule=LightingMaskRule(max_area=0.9, bimodality=0)))
    kwargs = {"resolution": case["resolution"]} if name in ("procedural", "tiny-dcgan") else {}
    generator = create_generator(name, device=device, **kwargs)
    directions, index = directions_for(generator, name)
    synthesizer = PairSynthesizer(generator, directions, index, case["rule"], device)
    scratch = Path(tempfile.mkdtemp(prefix="synthesis-speed-"))
    bounds, rates, runs = [], [], []
    try:
        # A short warm-up run (thread pools, allocator, cuDNN autotuning), then alternate bound and
        # pipeline timings so that a change in the machine's load hits both alike.
        synthesize(generator, directions, index, scratch / "warm", n=min(pairs, 4 * batch_size), rule=case["rule"],
                   batch_size=batch_size, format=storage, device=device, progress=False, preview=0, workers=workers)
        for repeat in range(repeats):
            bound, bound_threads = generator_bound(synthesizer, batch_size, seconds=2.0)
            bounds.append(bound)
            out = scratch / f"run{repeat}"
            start = time.perf_counter()
            manifest = synthesize(generator, directions, index, out, n=pairs, rule=case["rule"],
                                  batch_size=batch_size, format=storage, device=device, progress=False, preview=0,
                                  workers=workers, shard_size=1000)
            seconds = time.perf_counter() - start
            rates.append(manifest["counts"]["candidates"] / seconds)
            runs.append({"seconds": seconds, "candidates": manifest["counts"]["candidates"], "pairs": manifest["pairs"],
                         "rejection_rate": manifest["rejection_rate"],
                         "bytes_per_pair": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / manifest["pairs"]})
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(bound_threads)  # the generator's best setting, as for the bound
    try:
        stages = stage_costs(synthesizer, batch_size)
    finally:
        torch.set_num_threads(threads)
    bound, rate = sorted(bounds)[len(bounds) // 2], sorted(rates)[len(rates) // 2]
    kept_share = 1 - runs[0]["rejection_rate"]
    return {
        "generator": name,
        "resolution": generator.resolution,
        "device": str(device),
        "batch_size": batch_size,
        "storage": storage,
        "rule": manifest["rule"],
        "pairs": pairs,
        "rejection_rate": runs[0]["rejection_rate"],
        "bound_candidates_per_s": bound,
        "pipeline_candidates_per_s": rate,
        "kept_pairs_per_s": rate * kept_share,
        # Each pipeline run is paired with the bound timed just before it: the median of the
        # paired ratios cancels slow changes in the machine's load better than a ratio of medians.
        "ratio_to_bound": float(np.median([r / b for r, b in zip(rates, bounds)])),
        "ratios_per_repeat": [r / b for r, b in zip(rates, bounds)],
        "bytes_per_pair": runs[0]["bytes_per_pair"],
        "runs": runs,
        "bounds": bounds,
        "bound_torch_threads": bound_threads,
        "stage_ms_per_candidate": stages,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "pipeline_torch_threads_and_workers": "cores - workers, workers = cores // 4 (CPU); see saliency.synthesis",
    }


def stage_costs(synthesizer: PairSynthesizer, batch_size: int) -> dict:
    """Milliseconds of one thread per candidate for each stage (device work timed with a sync).

    Where no core is spare (a CPU-only or overloaded machine) the pipeline can reach at most
    generator / (generator + rule + host) of the bound.
    """
    from saliency.masks import REASONS
    from saliency.pairs import ShardWriter
    from saliency.synthesis import _finish_chunk, batch_latents

    device = synthesizer.device
    z, condition = batch_latents(synthesizer.generator, 0, 0, batch_size)
    z = z.to(device)

    def timed(function, repeats=5):
        function()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            result = function()
        synchronize(device)
        return (time.perf_counter() - start) / repeats / batch_size * 1e3, result

    generate, _ = timed(lambda: synthesizer.generate(z, condition))
    propose, tensors = timed(lambda: synthesizer.propose(z, condition))
    images, masks, reasons = (t.cpu().numpy() for t in tensors)
    host, results = timed(lambda: _finish_chunk(synthesizer.rule, images, masks, reasons, 0, batch_size, 0))
    scratch = Path(tempfile.mkdtemp(prefix="synthesis-stage-"))
    try:
        writer = ShardWriter(scratch, 0, 10**9, reasons=REASONS)
        counter = iter(range(10**9))

        def write():
            for _, reason, image_png, mask_png in results:
                if reason == 0:
                    writer.add(f"{next(counter):08d}", image_png, mask_png)

        write_ms, _ = timed(write)
        writer.finish()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    costs = {"generator": generate, "mask_rule_device": propose - generate, "host_masks_and_png": host, "tar_writing": write_ms}
    costs["zero_spare_core_ratio_limit"] = generate / (propose + host + write_ms)
    return costs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", default=None, help="comma-separated names (default: procedural, tiny-dcgan, horse-64 when registered)")
    parser.add_argument("--pairs", type=int, default=None, help="pairs per timed run (default: 20 batches' worth)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on CPU, 256 on CUDA")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--format", default="shards", choices=("shards", "png"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="alternating bound / pipeline measurements; medians reported")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "synthesis_speed"), help="results path without extension")
    args = parser.parse_args(argv)

    from discovery.runtime import resolve_device

    device = resolve_device(args.device)
    batch_size = args.batch_size or (256 if device.type == "cuda" else 64)
    names = args.generators.split(",") if args.generators else [n for n in CASES if n in list_generators()]
    from discovery.errors import UserError

    results, skipped = [], {}
    for name in names:
        pairs = args.pairs or 20 * batch_size
        try:
            result = measure(name, pairs=pairs, batch_size=batch_size, device=device, storage=args.format,
                             workers=args.workers, repeats=args.repeats)
        except UserError as exc:  # e.g. weights not installed yet
            skipped[name] = str(exc)
            print(f"{name:12s} skipped: {exc}", flush=True)
            continue
        results.append(result)
        print(f"{name:12s} {result['resolution']:4d}px  bound {result['bound_candidates_per_s']:9.1f}/s  "
              f"pipeline {result['pipeline_candidates_per_s']:9.1f}/s  ratio {result['ratio_to_bound']:.3f}  "
              f"kept {result['kept_pairs_per_s']:9.1f}/s  rejected {result['rejection_rate']:.1%}", flush=True)
    report = {"benchmark": "synthesis_speed", "target_ratio": 0.85, "machine": machine_info(), "results": results, "skipped": skipped}
    out = Path(args.out)
    write_json(report, out.with_suffix(".json"))
    lines = [
        "# Pair synthesis speed",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpu_count']} cores, "
        f"GPU: {report['machine']['cuda_device'] or 'none'}; torch {report['machine']['torch']}; {report['machine']['created']}.",
        "Rates count candidate pairs (two generator images each); the bound is the generator calls alone.",
        "",
        "| generator | px | device | batch | bound cand./s | pipeline cand./s | ratio | no-spare-core limit | kept pairs/s | rejected | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| {r['generator']} | {r['resolution']} | {r['device']} | {r['batch_size']} | {r['bound_candidates_per_s']:.1f} | "
                     f"{r['pipeline_candidates_per_s']:.1f} | {r['ratio_to_bound']:.3f} | {r['stage_ms_per_candidate']['zero_spare_core_ratio_limit']:.2f} | "
                     f"{r['kept_pairs_per_s']:.1f} | {r['rejection_rate']:.1%} | {r['load_average_1min']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps({"written": str(out.with_suffix('.json'))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
