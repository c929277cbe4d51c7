"""Images per second of the generators (BigGAN family, StyleGAN2, StyleGAN3-T), per architecture, batch size and precision.

Each generator is built with seeded random weights (the speed does not depend on their values;
no real checkpoint is needed) and timed in eval mode under ``torch.inference_mode``:

* precision: fp32, or the whole model cast to bf16 / fp16 (z is cast inside the adapter; the
  attention softmax and batch-norm factors stay in float32; images come back as float32);
* memory format: contiguous (NCHW) or channels-last (NHWC), ``--memory-format both`` for both;
* ``--compile``: also time ``torch.compile(generator)`` (after its warm-up calls).

A timing is the median over repeated calls for at least ``--seconds`` (3 calls at least), after
``--warmup`` calls; images/s = batch size / median seconds per call. The process CPU time per
call is recorded too: on a shared machine (see the load average) it shows the work itself.

    python benchmarks/generator_speed.py                                   # CPU, small batches
    python benchmarks/generator_speed.py --device cuda --batch-sizes 1,8,32,128 \\
        --precisions fp32,bf16,fp16 --memory-format both --compile          # a GPU

Writes ``benchmarks/results/generator_speed_<device>.json`` and ``.md`` with the machine's
description (CPU model, threads, load average; GPU name), unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from discovery.generators.biggan import BIGBIGAN_128, BIGGAN_128, BigGANGenerator  # noqa: E402
from discovery.generators.biggan_deep import BigGANDeepConfig, BigGANDeepGenerator  # noqa: E402
from discovery.generators.stylegan import StyleGANGenerator  # noqa: E402
from discovery.generators.stylegan2 import StyleGAN2Generator  # noqa: E402
from discovery.generators.stylegan3 import StyleGAN3Generator  # noqa: E402
from machine import machine_info

ARCHITECTURES = {
    "biggan-deep-128": lambda: BigGANDeepGenerator(BigGANDeepConfig.for_resolution(128)),
    "biggan-deep-256": lambda: BigGANDeepGenerator(BigGANDeepConfig.for_resolution(256)),
    "biggan-deep-512": lambda: BigGANDeepGenerator(BigGANDeepConfig.for_resolution(512)),
    "biggan-128": lambda: BigGANGenerator(BIGGAN_128, conditional=True, name="biggan-128"),
    "bigbigan-128": lambda: BigGANGenerator(BIGBIGAN_128, conditional=False, name="bigbigan-128"),
    # StyleGAN at 256 px, timed in Z (mapping + synthesis): StyleGAN2's paper256 config (channel base
    # 16384, 8 mapping layers), StyleGAN3-T with its default channel base 32768 and 2 mapping layers.
    # On CUDA their fp32 rows already run the highest resolutions in float16, as NVlabs' code does.
    "stylegan2-256": lambda: StyleGANGenerator(StyleGAN2Generator(img_resolution=256, channel_base=16384, num_fp16_res=4,
                                                                  mapping_kwargs={"num_layers": 8}), space="z", name="stylegan2-256"),
    "stylegan3-t-256": lambda: StyleGANGenerator(StyleGAN3Generator(img_resolution=256), space="z", architecture="stylegan3",
                                                 name="stylegan3-t-256"),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call, device: torch.device, warmup: int, seconds: float, min_calls: int = 3) -> tuple[float, float, int]:
    """Median wall seconds per call, median process CPU seconds per call (all threads; robust to
    other processes sharing the machine), and the number of timed calls."""
    for _ in range(warmup):
        call()
    synchronize(device)
    durations, cpu = [], []
    deadline = time.perf_counter() + seconds
    while len(durations) < min_calls or time.perf_counter() < deadline:
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        synchronize(device)
        durations.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    durations.sort()
    cpu.sort()
    return durations[len(durations) // 2], cpu[len(cpu) // 2], len(durations)


def benchmark(name: str, batch_sizes, precisions, memory_formats, compile_modes, device, warmup, seconds, log) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    base = ARCHITECTURES[name]()
    if hasattr(base, "model"):
        base.model.initialize_random(seed=0)
    base.eval().requires_grad_(False)
    for precision in precisions:
        for channels_last in memory_formats:
            generator = copy.deepcopy(base).to(device=device, dtype=DTYPES[precision])
            generator = generator.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            for compiled in compile_modes:
                module = torch.compile(generator) if compiled else generator
                for batch in batch_sizes:
                    z = generator.sample_latent(batch, torch.Generator().manual_seed(batch)).to(device)
                    condition = generator.sample_condition(batch, torch.Generator().manual_seed(batch + 1))
                    row = dict(generator=name, batch=batch, precision=precision, channels_last=channels_last, compile=compiled)
                    try:
                        with torch.inference_mode():
                            images = module(z, condition)
                            finite = bool(torch.isfinite(images).all())
                            seconds_per_call, cpu_per_call, calls = time_calls(lambda: module(z, condition), device, warmup + (2 if compiled else 0), seconds)
                    except (RuntimeError, torch.OutOfMemoryError) as exc:  # e.g. out of memory, no bf16 kernel
                        row.update(error=str(exc).splitlines()[0][:200])
                        log(f"{name:16s} batch {batch:4d} {precision} cl={channels_last!s:5s} compile={compiled!s:5s}  failed: {row['error']}")
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                        rows.append(row)
                        continue
                    row.update(images_per_s=round(batch / seconds_per_call, 3), ms_per_call=round(1000 * seconds_per_call, 2),
                               cpu_ms_per_call=round(1000 * cpu_per_call, 2), calls=calls, finite=finite)
                    if device.type == "cuda":
                        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                        torch.cuda.reset_peak_memory_stats(device)
                    log(f"{name:16s} batch {batch:4d} {precision} cl={channels_last!s:5s} compile={compiled!s:5s}  {row['images_per_s']:9.2f} img/s  ({row['ms_per_call']} ms/call, {calls} calls)")
                    rows.append(row)
            del generator, module
    del base
    return rows


def _machine_line(m: dict) -> str:
    return (f"{m.get('gpu', m['cpu'])} ({m['device']}); CPU {m['cpu']}, {m['cpu_count']} cores, torch threads {m['torch_threads']}, "
            f"load average at start {m.get('load_average_1_5_15', m.get('load_average'))}; torch {m['torch']}, {m['platform']}, {m.get('created', '')}")


def markdown(result: dict) -> str:
    # rows appended by later runs keep the machine they ran on (runs: one entry per invocation)
    runs = result.get("runs") or [{"machine": result["machine"], "command": result["command"]}]
    lines = ["# Generator speed (images/s)", ""]
    for number, run in enumerate(runs, 1):
        lines.append(f"Run {number}: {_machine_line(run['machine'])}; command: `{run['command']}`.")
    lines += [
        "",
        f"Random weights; median of >= {result['settings']['seconds']} s of calls after {result['settings']['warmup']} warm-up calls.",
        "",
        "| generator | batch | precision | channels-last | compile | images/s | ms/call | CPU ms/call | run |",
        "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        speed = f"{row['images_per_s']:.2f}" if "images_per_s" in row else f"failed: {row['error']}"
        lines.append(f"| {row['generator']} | {row['batch']} | {row['precision']} | {'yes' if row['channels_last'] else 'no'} | "
                     f"{'yes' if row['compile'] else 'no'} | {speed} | {row.get('ms_per_call', '')} | {row.get('cpu_ms_per_call', '')} | "
                     f"{row.get('run', 1)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", default=",".join(ARCHITECTURES), help="comma-separated architectures")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default: 1,4 on CPU; 1,8,32,128 on CUDA)")
    parser.add_argument("--precisions", default=None, help="fp32,bf16,fp16 (default: fp32 on CPU, where half precision is slow; all three on CUDA)")
    parser.add_argument("--memory-format", choices=("contiguous", "channels-last", "both"), default=None, help="default: both")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(generator)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--seconds", type=float, default=3.0, help="time each setting for at least this long")
    parser.add_argument("--out", default=None, help="output path without suffix (default: benchmarks/results/generator_speed_<device>)")
    parser.add_argument("--append", action="store_true", help="add the rows to the existing results file instead of replacing it")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    gpu = device.type == "cuda"
    names = [n.strip() for n in args.generators.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown:
        parser.error(f"unknown generators {unknown}; known: {', '.join(ARCHITECTURES)}")
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,8,32,128" if gpu else "1,4")).split(",")]
    precisions = (args.precisions or ("fp32,bf16,fp16" if gpu else "fp32")).split(",")
    memory_formats = {"contiguous": [False], "channels-last": [True], "both": [False, True], None: [False, True]}[args.memory_format]
    compile_modes = [False, True] if args.compile else [False]

    result = {
        "machine": machine_info(device),
        "command": "python benchmarks/generator_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": dict(warmup=args.warmup, seconds=args.seconds, batch_sizes=batch_sizes, precisions=precisions),
        "rows": [],
    }
    print(f"machine: {result['machine']}", flush=True)
    for name in names:
        result["rows"] += benchmark(name, batch_sizes, precisions, memory_formats, compile_modes, device, args.warmup, args.seconds,
                                    lambda line: print(line, flush=True))
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"generator_speed_{'cuda' if gpu else 'cpu'}"
    out.parent.mkdir(parents=True, exist_ok=True)
    result["runs"] = [{"machine": result["machine"], "command": result["command"]}]
    if args.append and out.with_suffix(".json").exists():
        previous = json.loads(out.with_suffix(".json").read_text())
        runs = previous.get("runs") or [{"machine": previous["machine"], "command": previous["command"]}]
        for row in result["rows"]:
            row["run"] = len(runs) + 1
        result["rows"] = previous["rows"] + result["rows"]
        result["runs"] = runs + result["runs"]
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
