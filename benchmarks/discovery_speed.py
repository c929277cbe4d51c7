"""Voynov-Babenko training speed against the floor set by the generator.

A training step must at least run the generator twice (G(z) and G(z + shift)) and
back-propagate once through the shifted call (to reach the deformator); that is the floor,
timed on the same batch with the same mixed precision and nothing else. The step is the
whole ``VoynovTrainer.train_step``: sampling, both generator calls, deformator,
reconstructor forward and backward, two Adam updates. Target: step <= 1.3 x floor.

When the generator is tiny next to the reconstructor (the procedural generator is a few
element-wise operations at 32 px), the floor says little: the reconstructor is the cost,
and the table shows its share.

    python benchmarks/discovery_speed.py                              # procedural, tiny-dcgan, horse-64 (if registered)
    python benchmarks/discovery_speed.py --generators tiny-dcgan --device cuda --batch-size 32

Writes ``benchmarks/results/discovery_speed-<machine>.json`` and updates the table in
``benchmarks/results/discovery_speed.md``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from discovery.deformators import build_deformator  # noqa: E402
from discovery.generators import create_generator, list_generators  # noqa: E402
from discovery.io import atomic_write_text, write_json  # noqa: E402
from discovery.runtime import resolve_device  # noqa: E402
from discovery.voynov import _build_trainer, _config  # noqa: E402
from machine import machine_info

TARGET = 1.3


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(functions: dict, device: torch.device, repeats: int, warmup: int, clock: str) -> dict[str, float]:
    """Median seconds of one call of each function, by the wall clock or by this process's CPU time.

    The functions take turns, so a change in machine load affects all of them alike. CPU time
    (with --threads 1) is the honest measure on a CPU shared with other jobs: the wall clock
    then counts the time other processes hold the core.
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    times = {name: [] for name in functions}
    for repeat in range(warmup + repeats):
        for name, function in functions.items():
            synchronize(device)
            start = now()
            function()
            synchronize(device)
            if repeat >= warmup:
                times[name].append(now() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(name: str, device: torch.device, batch_size: int, repeats: int, warmup: int, amp: bool, clock: str) -> dict:
    generator = create_generator(name, device=device)
    K = generator.dim_z
    config = _config(generator, K, 10**9, batch_size, 6.0, 0.5, "linear", True, "auto", None, 1e-4, 1.0, 0.25, 0, 1024, 10**9, 10**9)
    deformator = build_deformator("linear", K, generator.dim_z, generator=torch.Generator().manual_seed(0))
    trainer = _build_trainer(generator, deformator, config, device, amp)
    z, condition, k, eps = trainer.sample()
    shift = trainer.deformator(k, eps).detach()

    def floor():
        with torch.no_grad(), trainer._autocast():
            generator(z, condition)
        shifted_z = (z + shift).requires_grad_(True)
        with trainer._autocast():
            image = generator(shifted_z, condition)
        image.float().sum().backward()

    original, shifted = trainer.images(z, condition, k, eps, grad=False)
    shifted.requires_grad_(True)

    def reconstructor():
        with trainer._autocast():
            logits, eps_hat = trainer.reconstructor(original, shifted)
        (logits.float().logsumexp(1).mean() + eps_hat.float().abs().mean()).backward()
        trainer.reconstructor_opt.step()
        trainer.reconstructor_opt.zero_grad(set_to_none=True)

    medians = timed({"floor": floor, "reconstructor": reconstructor, "step": trainer.train_step}, device, repeats, warmup, clock)
    floor_s, reconstructor_s, step_s = medians["floor"], medians["reconstructor"], medians["step"]
    return {
        "generator": name,
        "device": str(device),
        "batch_size": batch_size,
        "clock": clock,
        "amp": trainer.amp,
        "amp_dtype": str(trainer.amp_dtype) if trainer.amp else None,
        "reconstructor": type(trainer.reconstructor).__name__,
        "resolution": int(generator.resolution),
        "dim_z": int(generator.dim_z),
        "floor_ms": 1000 * floor_s,
        "reconstructor_ms": 1000 * reconstructor_s,
        "step_ms": 1000 * step_s,
        "steps_per_second": 1 / step_s,
        "ratio": step_s / floor_s,
        "ratio_to_floor_plus_reconstructor": step_s / (floor_s + reconstructor_s),
        "within_target": step_s / floor_s <= TARGET,
    }


def machine_tag(devices: list[torch.device], info: dict) -> str:
    if any(d.type == "cuda" for d in devices):
        name = torch.cuda.get_device_name(0)
    else:
        name = f"{info['cpu']} {info['torch_threads']}t"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def update_markdown(path: Path, rows: list[dict], tag: str, info: dict) -> None:
    """Keep one table; rows of this machine replace its earlier rows."""
    header = (
        "# Discovery speed (Voynov-Babenko training step vs generator floor)\n\n"
        "Floor = G(z) + G(z + shift) + one backward through the shifted call; reconstructor = its forward, backward\n"
        "and Adam step alone; step = the whole training step. Target: step <= 1.3 x floor, which only a generator\n"
        "that outweighs the reconstructor can meet; the last column shows what the loop adds to its two necessary\n"
        "parts. Clock `cpu` = process CPU time with one thread (the CPU here is shared with other jobs).\n"
        "Written by `benchmarks/discovery_speed.py`; details in `discovery_speed-<machine>.json`.\n\n"
        "| machine | generator | device | batch | clock | reconstructor | floor ms | reconstructor ms | step ms | steps/s | step/floor | step/(floor+rec.) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    kept = []
    if path.exists():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("| ") and not line.startswith(f"| {tag} |")]
        kept = [line for line in kept if not line.startswith("| machine |")]
    new = [
        f"| {tag} | {r['generator']} | {r['device']}{' ' + r['amp_dtype'].replace('torch.', '') if r['amp'] else ''} | {r['batch_size']} | {r['clock']} | "
        f"{r['reconstructor']} | {r['floor_ms']:.2f} | {r['reconstructor_ms']:.2f} | {r['step_ms']:.2f} | {r['steps_per_second']:.1f} | {r['ratio']:.2f} | {r['ratio_to_floor_plus_reconstructor']:.2f} |"
        for r in rows
    ]
    atomic_write_text(header + "\n".join(kept + new) + "\n", path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", default=None, help="comma-separated names (default: procedural, tiny-dcgan, horse-64 when registered)")
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (cpu, and cuda when present)")
    parser.add_argument("--batch-size", type=int, default=32, help="the paper's batch size")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls; medians reported")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-amp", action="store_true")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: process CPU time (for CPUs shared with other jobs; use --threads 1)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    known = list_generators()
    names = args.generators.split(",") if args.generators else [n for n in ("procedural", "tiny-dcgan", "horse-64") if n in known]
    if args.device == "all":
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    else:
        devices = [resolve_device(args.device)]
    rows = []
    print(f"{'generator':12s} {'device':8s} {'floor ms':>9s} {'recon ms':>9s} {'step ms':>9s} {'steps/s':>8s} {'ratio':>6s} {'vs f+r':>6s}")
    for device in devices:
        for name in names:
            row = measure(name, device, args.batch_size, args.repeats, args.warmup, amp=not args.no_amp, clock=args.clock if device.type == "cpu" else "wall")
            rows.append(row)
            print(f"{name:12s} {str(device):8s} {row['floor_ms']:9.2f} {row['reconstructor_ms']:9.2f} {row['step_ms']:9.2f} "
                  f"{row['steps_per_second']:8.1f} {row['ratio']:6.2f} {row['ratio_to_floor_plus_reconstructor']:6.2f}"
                  f"{'' if row['within_target'] else '  (above target)'}", flush=True)  # fmt: skip
    info = machine_info()
    tag = machine_tag(devices, info)
    out = Path(args.out)
    write_json({"benchmark": "discovery_speed", "target_ratio": TARGET, "machine": info, "results": rows}, out / f"discovery_speed-{tag}.json")
    update_markdown(out / "discovery_speed.md", rows, tag, info)
    print(f"wrote {out / f'discovery_speed-{tag}.json'} and {out / 'discovery_speed.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
