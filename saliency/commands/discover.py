"""``saliency discover``: find interpretable latent directions of a generator.

Parses options and calls ``discovery.voynov.discover_voynov`` (default), or the Hessian,
GANSpace or SeFa method; then ranks directions by how well they remove the background (when
``discovery.background`` is installed) and draws one chart per direction.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from discovery.errors import UserError

NAME = "discover"
HELP = "discover interpretable latent directions (Voynov-Babenko, Hessian, GANSpace or SeFa)"
DESCRIPTION = """Discover interpretable directions in a generator's latent space.

Writes OUT/directions.pt (load it with discovery.load_directions), OUT/summary.json,
OUT/charts/ (one PNG per direction and index.html) and, for --method voynov, a checkpoint,
stats.csv / stats.jsonl / tensorboard logs; --resume continues an interrupted run.
Voynov defaults are the paper's: K = dim_z directions, 1e5 steps, batch 32, shifts
6 * U[-1, 1] with |eps| >= 0.5, Adam 1e-4, loss CE + 0.25 * L1."""

METHODS = ("voynov", "hessian", "ganspace", "sefa")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from discovery.deformators import DEFORMATOR_TYPES
    from discovery.reconstructors import RECONSTRUCTOR_TYPES

    from saliency.commands.common import add_generator_arguments

    add_generator_arguments(parser)
    parser.add_argument("--method", choices=METHODS, default="voynov", help="discovery method")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--directions", type=int, default=None, help="number of directions K; None: dim_z (other methods: keep the top K)")
    parser.add_argument("--charts", type=int, default=None, help="how many direction charts to draw; None: all")
    parser.add_argument("--chart-rows", type=int, default=6, help="latents per chart")
    parser.add_argument("--chart-columns", type=int, default=9, help="shifts per chart, from -s to +s")

    voynov = parser.add_argument_group("voynov (Voynov & Babenko 2020)")
    voynov.add_argument("--steps", type=int, default=100_000, help="training steps")
    voynov.add_argument("--batch-size", type=int, default=None, help="samples per step; None: 32 (hessian: 16)")
    voynov.add_argument("--shift-scale", type=float, default=None, help="shifts eps in [-s, s]; None: 6 (other methods: their own chart range)")
    voynov.add_argument("--min-shift", type=float, default=0.5, help="smallest |eps|; smaller shifts are pushed out to it")
    voynov.add_argument("--deformator", choices=DEFORMATOR_TYPES, default="linear", help="direction matrix type")
    voynov.add_argument("--reconstructor", choices=RECONSTRUCTOR_TYPES, default="auto", help="auto: ResNet-18 from 64 px, LeNet below")
    voynov.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of deformator and reconstructor")
    voynov.add_argument("--label-weight", type=float, default=1.0, help="weight of the direction-classification loss")
    voynov.add_argument("--shift-weight", type=float, default=0.25, help="weight of the L1 shift loss")
    voynov.add_argument("--rca-samples", type=int, default=1024, help="held-out samples for the reconstructor accuracy (RCA)")
    voynov.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                        help="also train reconstructors on random and identity directions and report their RCA")  # fmt: skip
    voynov.add_argument("--baseline-steps", type=int, default=None, help="baseline training steps; None: --steps")
    voynov.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    voynov.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    voynov.add_argument("--log-every", type=int, default=100, help="steps between log rows")
    voynov.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")

    geometry = parser.add_argument_group("hessian / ganspace / sefa")
    geometry.add_argument("--samples", type=int, default=None, help="latents averaged (hessian) or sampled (ganspace); None: the method's default (8 / 4096)")
    geometry.add_argument("--distance", choices=("mse", "features", "lpips"), default="mse", help="hessian image distance")
    geometry.add_argument("--top-k", type=int, default=None, help="keep the top-k directions; None: all")
    exact = geometry.add_mutually_exclusive_group()
    exact.add_argument("--exact", dest="exact", action="store_true", default=None, help="hessian: full Hessian")
    exact.add_argument("--lanczos", dest="exact", action="store_false", help="hessian: Lanczos on Hessian-vector products")
    geometry.add_argument("--layer", default=None, help="ganspace: feature layer; None: the generator's first")
    geometry.add_argument("--rca-steps", type=int, default=0, help="hessian/ganspace/sefa: train a reconstructor this long to report RCA (0: skip)")


def _check_options(args: argparse.Namespace) -> None:
    """Option checks that need no generator."""
    positive = {"--steps": args.steps, "--rca-samples": args.rca_samples, "--checkpoint-every": args.checkpoint_every, "--log-every": args.log_every}
    for flag in ("directions", "batch_size", "samples", "top_k", "baseline_steps"):
        value = getattr(args, flag)
        if value is not None:
            positive["--" + flag.replace("_", "-")] = value
    for flag, value in positive.items():
        if value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    if args.charts is not None and args.charts < 0:
        raise UserError(f"--charts {args.charts}: must not be negative")
    if args.chart_rows < 1 or args.chart_columns < 1:
        raise UserError("--chart-rows and --chart-columns: must be at least 1")
    if args.rca_steps < 0:
        raise UserError(f"--rca-steps {args.rca_steps}: must not be negative")
    if args.shift_scale is not None and not args.shift_scale > 0:
        raise UserError(f"--shift-scale {args.shift_scale}: must be positive")
    if args.method != "voynov" and args.resume:
        raise UserError(f"--resume: only --method voynov trains long enough to resume ({args.method} runs in one go)")


def run(args: argparse.Namespace) -> None:
    from discovery.io import ensure_fresh_output, run_manifest
    from discovery.runtime import resolve_device, seed_everything

    from saliency.commands.common import build_generator, generator_options

    _check_options(args)
    out = Path(args.out)
    # Everything that can fail on bad input fails here, before the output folder exists.
    ensure_fresh_output(out, args.resume, "checkpoint.pt" if args.method == "voynov" else "directions.pt")
    device = resolve_device(args.device)
    options = generator_options(args)
    print(f"Load generator {args.generator}...", flush=True)
    generator = build_generator(args, device, options=options)
    if args.weights is not None:
        options["weights"] = str(Path(args.weights).resolve())
    seed_everything(args.seed)

    started = time.perf_counter()
    if args.method == "voynov":
        from discovery.voynov import discover_voynov

        directions = discover_voynov(
            generator, out, directions=args.directions, steps=args.steps, batch_size=args.batch_size or 32,
            shift_scale=args.shift_scale if args.shift_scale is not None else 6.0, min_shift=args.min_shift,
            deformator=args.deformator, reconstructor=args.reconstructor, lr=args.lr, label_weight=args.label_weight,
            shift_weight=args.shift_weight, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
            rca_samples=args.rca_samples, baselines=args.baselines, baseline_steps=args.baseline_steps, resume=args.resume,
            seed=args.seed, device=device, amp=not args.no_amp, generator_options=options, progress=True,
        )  # fmt: skip
        from discovery.io import read_json

        summary = read_json(out / "summary.json")
    else:
        directions, summary = _discover_geometry(args, generator, device, out, options)
    summary["seconds"] = time.perf_counter() - started

    order = _rank_background(generator, directions, out, summary, args.seed)
    if args.charts != 0:
        from discovery.charts import write_direction_charts

        print("Draw direction charts...", flush=True)
        scale = args.shift_scale if args.method != "voynov" else None
        paths = write_direction_charts(
            generator, directions, out, count=args.charts, rows=args.chart_rows, columns=args.chart_columns, seed=args.seed,
            order=order, shift_scale=scale, progress=True,
        )  # fmt: skip
        summary["charts"] = len(paths)
    directions.save(out / "directions.pt")
    summary.setdefault("manifest", run_manifest(method=args.method))
    from discovery.io import write_json

    write_json(summary, out / "summary.json")
    rca = summary.get("rca")
    line = f"{directions.count} directions written to {out / 'directions.pt'}"
    if rca is not None:
        line += f"; RCA {rca:.4f}"
        if summary.get("baselines"):
            line += " (" + ", ".join(f"{k} {v:.4f}" for k, v in summary["baselines"].items()) + ")"
    print(line, flush=True)


def _discover_geometry(args, generator, device, out: Path, options: dict):
    """Hessian, GANSpace and SeFa: closed-form or averaged geometry, no training loop."""
    from discovery.io import run_manifest

    top_k = args.top_k if args.top_k is not None else args.directions
    if args.method == "hessian":
        from discovery.hessian import discover_hessian, write_spectrum_report

        kwargs = dict(distance=args.distance, top_k=top_k, exact=args.exact, batch_size=args.batch_size or 16, seed=args.seed, device=device, progress=True)
        if args.samples is not None:
            kwargs["samples"] = args.samples
        directions = discover_hessian(generator, **kwargs)
    elif args.method == "ganspace":
        from discovery.closed_form import discover_ganspace

        kwargs = dict(layer=args.layer, top_k=top_k, seed=args.seed, device=device)
        if args.samples is not None:
            kwargs["samples"] = args.samples
        directions = discover_ganspace(generator, **kwargs)
    else:
        from discovery.closed_form import discover_sefa

        directions = discover_sefa(generator, top_k=top_k)
    if args.shift_scale is not None:
        directions.shift_scale = args.shift_scale
    for key, value in options.items():
        directions.generator_options.setdefault(key, value)
    if not directions.manifest:
        directions.manifest = run_manifest(method=args.method)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"method": args.method, "generator": directions.generator, "directions": directions.count, "dim_z": directions.dim_z}
    if args.method == "hessian":
        summary["spectrum"] = write_spectrum_report(directions, out)
    if args.rca_steps > 0:
        from discovery.voynov import measure_rca

        print(f"Measure RCA ({args.rca_steps} reconstructor steps)...", flush=True)
        held_out = measure_rca(generator, directions, steps=args.rca_steps, batch_size=args.batch_size or 32, seed=args.seed,
                               device=device, rca_samples=args.rca_samples, amp=not args.no_amp, progress=True, details=True)  # fmt: skip
        summary["rca"] = held_out["rca"]
        directions.stats.setdefault("accuracy", held_out["per_direction_accuracy"])
    summary["manifest"] = directions.manifest
    return directions, summary


def _rank_background(generator, directions, out: Path, summary: dict, seed: int):
    """Rank directions by background removal when ``discovery.background`` is installed; None otherwise."""
    try:
        from discovery.background import rank_background_directions
    except ModuleNotFoundError as exc:
        if exc.name != "discovery.background":
            raise
        return None
    from discovery.io import write_json

    print("Rank directions by background removal...", flush=True)
    ranking = rank_background_directions(generator, directions, seed=seed)
    write_json(ranking, out / "background_ranking.json")
    scores = [float("nan")] * directions.count
    for entry in ranking:
        scores[int(entry["index"])] = float(entry["score"])
    directions.stats["background_score"] = scores
    if ranking:
        summary["background_direction"] = int(ranking[0]["index"])
        summary["background_ranking"] = [{"index": int(e["index"]), "score": float(e["score"])} for e in ranking[:5]]
    return [int(entry["index"]) for entry in ranking]
