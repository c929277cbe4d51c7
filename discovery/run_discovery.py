"""``discovery.discover``: the discovery stage as one library call (``saliency discover`` only parses flags).

Runs a registered method (``discovery.methods``), ranks the directions as background-removal
candidates and records the choice in the directions (``discovery.background``), draws one chart
per direction and writes ``directions.pt`` and ``summary.json``; the same files whether it is
called from Python, from the command line or from ``saliency pipeline``.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

from discovery.errors import UserError, library_call
from discovery.generators.resolve import resolve_generator
from discovery.runtime import get_logger

log = get_logger("discover")


def _accepted(function, values: dict) -> dict:
    parameters = inspect.signature(function).parameters
    return {key: value for key, value in values.items() if key in parameters}


@library_call
def discover(
    generator,                  # a LatentGenerator, or a registered / plugin generator name
    method: str = "voynov",     # a registered discovery method (discovery.methods: voynov, hessian, ganspace, sefa, ...)
    out=None,                   # run folder (directions.pt, summary.json, charts/, background_ranking.json); None: nothing written
    *,
    weights=None,               # weights of a named generator (None: the cache or the package)
    generator_options=None,     # options of a named generator (classes, truncation, ...), kept in directions.pt
    seed: int = 0,              # every random choice of the run
    device=None,                # None / "auto": CUDA when present
    resume: bool = False,       # continue an interrupted run of a resumable method (voynov)
    charts: int | None = None,  # direction charts to draw, best background candidates first (None: all, 0: none)
    chart_rows: int = 6,        # latents per chart
    chart_columns: int = 9,     # shifts per chart, from -s to +s
    rank_background: bool = True,  # score every direction as a background-removal candidate and record the best
    rca_steps: int = 0,         # non-voynov methods: train a reconstructor this long to report RCA (0: skip)
    progress: bool = True,      # titled sections and progress bars
    **method_options,           # the method's own options (see `saliency discover --help` or discovery.methods)
):
    """Discover directions of ``generator`` with ``method``; returns the Directions (saved in ``out``)."""
    from discovery.io import ensure_fresh_output, run_manifest, write_json
    from discovery.methods import get_method
    from discovery.runtime import resolve_device, seed_everything

    # Check the request (before anything is built or written).
    entry = get_method(method)
    entry.check_options(method_options)
    if charts is not None and charts < 0:
        raise UserError(f"--charts {charts}: must not be negative")
    if chart_rows < 1 or chart_columns < 1:
        raise UserError("--chart-rows and --chart-columns: must be at least 1")
    if rca_steps < 0:
        raise UserError(f"--rca-steps {rca_steps}: must not be negative")
    if resume and not entry.resumable:
        raise UserError(f"--resume: only resumable methods can continue ({method} runs in one go)")
    if resume and out is None:
        raise UserError("resume=True needs an out folder")
    for key, value in method_options.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value != value:
            raise UserError(f"--{key.replace('_', '-')} {value}: not a number")
    out = Path(out) if out is not None else None
    if out is not None:
        ensure_fresh_output(out, resume, entry.marker)
    device = resolve_device(device) if not hasattr(device, "type") else device
    name = generator if isinstance(generator, str) else getattr(generator, "name", "custom")
    log.info(f"Load generator {name}...")
    G = resolve_generator(generator, weights=weights, generator_options=generator_options, device=device)
    options = dict(generator_options or {})
    if weights is not None:
        options["weights"] = str(Path(weights).resolve())
    seed_everything(seed)

    # Discover.
    started = time.perf_counter()
    standard = {"seed": seed, "device": device, "progress": progress, "resume": resume, "generator_options": options}
    result = entry.run(G, out, **_accepted(entry.run, standard), **method_options)
    directions, summary = result if isinstance(result, tuple) else (result, {})
    summary = dict(summary)
    if out is not None and (out / "summary.json").is_file() and not summary:
        from discovery.io import read_json

        summary = read_json(out / "summary.json")  # methods that write their own (voynov)
    for key, value in options.items():
        directions.generator_options.setdefault(key, value)
    directions.generator = getattr(G, "name", directions.generator)
    if not directions.manifest:
        directions.manifest = run_manifest(method=method)
    summary.update({"method": method, "generator": directions.generator, "directions": directions.count, "dim_z": directions.dim_z})
    if rca_steps > 0 and method != "voynov":
        from discovery.voynov import measure_rca

        log.info(f"Measure RCA ({rca_steps} reconstructor steps)...")
        held_out = measure_rca(G, directions, steps=rca_steps, batch_size=32, seed=seed, device=device, progress=progress, details=True)
        summary["rca"] = held_out["rca"]
        directions.stats.setdefault("accuracy", held_out["per_direction_accuracy"])
    summary["seconds"] = time.perf_counter() - started

    # Background choice, recorded in the directions.
    order = None
    if rank_background:
        from discovery.background import rank_background_directions, record_ranking, write_background_report

        log.info("Rank directions by background removal...")
        ranking = rank_background_directions(G, directions, seed=seed, progress=progress)
        if directions.background is None:
            record_ranking(directions, ranking)
        else:  # the method decided (e.g. an optimised direction): keep its choice, store the scores beside it
            from discovery.background import background_stats

            directions.stats.update(background_stats(ranking, directions.count))
        if out is not None:
            write_background_report(G, directions, ranking, out)
        summary["background_direction"] = directions.background["index"]
        summary["background_sign"] = directions.background["sign"]
        summary["background_ranking"] = [{"index": int(e["index"]), "score": float(e["score"])} for e in ranking[:5]]
        order = [int(e["index"]) for e in ranking]

    # Charts, directions file, summary.
    if out is not None:
        if charts != 0:
            from discovery.charts import write_direction_charts

            log.info("Draw direction charts...")
            paths = write_direction_charts(G, directions, out, count=charts, rows=chart_rows, columns=chart_columns, seed=seed,
                                           order=order, progress=progress)
            summary["charts"] = len(paths)
        directions.save(out / "directions.pt")
        summary.setdefault("manifest", directions.manifest)
        write_json(summary, out / "summary.json")
    line = f"{directions.count} directions" + (f" written to {out / 'directions.pt'}" if out is not None else "")
    if summary.get("rca") is not None:
        line += f"; RCA {summary['rca']:.4f}"
        if summary.get("baselines"):
            line += " (" + ", ".join(f"{k} {v:.4f}" for k, v in summary["baselines"].items()) + ")"
    log.info(line)
    return directions
