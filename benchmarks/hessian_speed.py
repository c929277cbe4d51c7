"""Full Hessian of a 128-d latent: batched forward-over-reverse HVPs vs a loop of backward passes.

The paper's official code builds the Hessian of the image distance with one double-backward
pass per latent coordinate (gradient with ``create_graph``, then ``autograd.grad`` of each
component). ``discovery.hessian.exact_hessian`` computes the same matrix from Hessian-vector
products, ``torch.func.jvp(torch.func.grad(f))``, vmapped over the basis vectors in chunks.
Both run here on the same generator and latent, in one process, interleaved (A B A B ...) so
that a busy machine slows both alike; the minimum over repetitions is the time reported.

Wall-clock and process CPU time are both recorded: on a shared machine the CPU time is the
steadier measure of the work each method does.

A third line: ``discovery.hessian.jacobian_hessian``, H = 2 J^T J / n from batched forward-mode
JVPs, which equals the MSE Hessian at z' = z and is what ``discover_hessian`` uses for squared
distances.

    python benchmarks/hessian_speed.py [--dim-z 128] [--resolutions 64 32 16] [--threads N] [--repeats 3] [--out FILE]

Writes ``benchmarks/results/hessian_speed-<device>.json`` and ``.md`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def time_one(args, resolution: int, device: torch.device) -> dict:
    """Both methods (and the forward Jacobian) on tiny-dcgan at one image size, interleaved."""
    from discovery.generators import create_generator
    from discovery.hessian import exact_hessian, hessian_backward_loop, jacobian_hessian, latent_distance, make_distance

    G = create_generator("tiny-dcgan", dim_z=args.dim_z, resolution=resolution, width=args.width, device=device)
    z = G.sample_latent(1, torch.Generator().manual_seed(0))[0]
    f = latent_distance(G, z)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def batched():
        return exact_hessian(f, z, batch_size=args.batch_size)

    def loop():
        return hessian_backward_loop(f, z)

    def forward_jacobian():  # what discover_hessian uses for squared distances
        return jacobian_hessian(G, z, None, make_distance("mse"), batch_size=args.batch_size)

    methods = {"batched_forward_over_reverse": batched, "backward_loop": loop, "forward_jacobian_gauss_newton": forward_jacobian}
    wall = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    hessians = {}
    for name, fn in methods.items():  # warm-up, and the matrices to compare
        hessians[name] = fn().double().cpu()
        sync()
    for _ in range(args.repeats):
        for name, fn in methods.items():
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    reference = hessians["backward_loop"]
    best = {name: min(times) for name, times in wall.items()}
    best_cpu = {name: min(times) for name, times in cpu.items()}
    return {
        "generator": {"name": "tiny-dcgan", "dim_z": args.dim_z, "resolution": resolution, "width": args.width,
                      "parameters": sum(p.numel() for p in G.parameters())},
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "best_wall_seconds": best,
        "best_cpu_seconds": best_cpu,
        "speedup_batched_vs_loop": best["backward_loop"] / best["batched_forward_over_reverse"],
        "cpu_time_speedup_batched_vs_loop": best_cpu["backward_loop"] / best_cpu["batched_forward_over_reverse"],
        "speedup_forward_jacobian_vs_loop": best["backward_loop"] / best["forward_jacobian_gauss_newton"],
        "relative_difference_to_loop": {
            name: float((h - reference).norm() / reference.norm()) for name, h in hessians.items() if name != "backward_loop"
        },
    }


def markdown(report: dict) -> str:
    """The result as a table, beside the JSON."""
    m = report["machine"]
    lines = [
        "# Hessian speed: batched forward-over-reverse HVPs vs a loop of backward passes",
        "",
        f"{report['task']}. Machine: {m['cpu']}, {m['cpu_count']} logical CPUs, {m['torch_threads']} torch thread(s), "
        f"torch {m['torch']}, device {m['device']}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}; load average before the run {m.get('load_average_before')}. "
        f"{report['repeats']} interleaved repetitions after a warm-up, best reported; vmap chunk {report['batch_size']}.",
        "",
        "| image size | batched fwd-over-rev (s) | backward loop (s) | speedup (wall) | speedup (CPU time) | forward Jacobian J^T J (s) | its speedup | max rel. diff to loop |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in report["runs"]:
        best = run["best_wall_seconds"]
        diff = max(run["relative_difference_to_loop"].values())
        lines.append(
            f"| {run['generator']['resolution']} px | {best['batched_forward_over_reverse']:.3f} | {best['backward_loop']:.3f} | "
            f"{run['speedup_batched_vs_loop']:.1f}x | {run['cpu_time_speedup_batched_vs_loop']:.1f}x | "
            f"{best['forward_jacobian_gauss_newton']:.3f} | {run['speedup_forward_jacobian_vs_loop']:.1f}x | {diff:.1e} |"
        )
    lines += ["", f"Target 10x at {report['headline_resolution']} px: {'met' if report['target_met'] else 'not met'} "
              f"({report['speedup_batched_vs_loop']:.1f}x). Recorded {report['created']} with `{report['command']}`.", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dim-z", type=int, default=128, help="latent size")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 32, 16], choices=(16, 32, 64),
                        help="tiny-dcgan image sizes; the first is the headline result")
    parser.add_argument("--width", type=int, default=32, help="tiny-dcgan channel width")
    parser.add_argument("--batch-size", type=int, default=64, help="HVPs per vmap chunk")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions of each method (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/hessian_speed-<device>.json)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    runs = [time_one(args, resolution, device) for resolution in args.resolutions]
    headline = runs[0]
    speedup = headline["speedup_batched_vs_loop"]
    report = {
        "benchmark": "hessian_speed",
        "task": f"full {args.dim_z}x{args.dim_z} Hessian of the MSE image distance at one latent of tiny-dcgan",
        "headline_resolution": args.resolutions[0],
        "speedup_batched_vs_loop": speedup,
        "cpu_time_speedup_batched_vs_loop": headline["cpu_time_speedup_batched_vs_loop"],
        "target_speedup": 10.0,
        "target_met": speedup >= 10.0,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "runs": runs,
        "machine": {**machine_info(device), "load_average_before": load_before},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python", "benchmarks/hessian_speed.py"] + (list(argv) if argv is not None else sys.argv[1:])),
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"hessian_speed-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")

    print(f"{report['task']}; {report['machine']['cpu']}, {torch.get_num_threads()} thread(s), {device}")
    for run in runs:
        print(f"  {run['generator']['resolution']} px:")
        for name in run["wall_seconds"]:
            times = ", ".join(f"{t:.3f}" for t in run["wall_seconds"][name])
            print(f"    {name:32s} best {run['best_wall_seconds'][name]:8.3f} s wall, {run['best_cpu_seconds'][name]:8.3f} s CPU   (wall: {times})")
        print(f"    speedup batched vs loop: {run['speedup_batched_vs_loop']:.1f}x wall, {run['cpu_time_speedup_batched_vs_loop']:.1f}x CPU; "
              f"forward Jacobian vs loop: {run['speedup_forward_jacobian_vs_loop']:.1f}x")
    print(f"  headline ({args.resolutions[0]} px): {speedup:.1f}x (target 10x: {'met' if report['target_met'] else 'not met'})")
    print(f"  written to {out}")
    return report


if __name__ == "__main__":
    main()
