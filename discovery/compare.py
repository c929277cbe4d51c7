"""Compare discovery methods on one generator: RCA, time, and their top directions side by side.

Every method's directions are cut to the same number K (``count``, default the smallest
file's), so that reconstructor classification accuracy (RCA, Voynov & Babenko's measure:
how well a reconstructor trained on the FIXED directions tells them apart; chance is 1/K)
is comparable. Also reported: how far the methods agree with each other (for each top
direction of one method, the best |cosine| with the other's top directions), the best
background-removal score when the files carry one, and, for generators with known factors
(the procedural one), how well each method recovers each factor.

Files: ``comparison.json``, ``comparison.md``, ``comparison.png`` (one column per method,
its top directions as charts from ``discovery.charts.direction_chart``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from discovery.directions import Directions
from discovery.errors import UserError


def _truncate(directions: Directions, count: int) -> Directions:
    stats = {}
    for key, value in directions.stats.items():
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        stats[key] = list(value[:count]) if isinstance(value, (list, tuple)) and len(value) == directions.count else value
    return Directions(
        matrix=directions.matrix[:count].clone(),
        generator=directions.generator,
        method=directions.method,
        shift_scale=directions.shift_scale,
        stats=stats,
        manifest=dict(directions.manifest),
        generator_options=dict(directions.generator_options),
    )


def _unit_rows(matrix: torch.Tensor) -> torch.Tensor:
    matrix = matrix.double()
    return matrix / matrix.norm(dim=1, keepdim=True).clamp_min(1e-12)


def best_cosines(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """For each row of a: the largest |cosine| with a row of b."""
    return (_unit_rows(a) @ _unit_rows(b).T).abs().max(1).values.numpy()


def factor_alignment(generator, directions: Directions) -> dict | None:
    """{factor: {"index", "cosine"}} of the best-aligned direction, and the span measure, for
    generators with known ``factor_directions``; None otherwise."""
    factors = getattr(generator, "factor_directions", None)
    if not isinstance(factors, dict) or not factors:
        return None
    names = list(factors)
    truth = torch.stack([torch.as_tensor(factors[n]).double().cpu() for n in names])
    rows = _unit_rows(directions.matrix)
    cosines = (_unit_rows(truth) @ rows.T).abs()
    q, _ = torch.linalg.qr(rows[: min(len(names), rows.shape[0])].T)  # span of the top len(factors) directions
    in_span = (_unit_rows(truth) @ q).norm(dim=1)
    out = {}
    for i, name in enumerate(names):
        j = int(cosines[i].argmax())
        out[name] = {"index": j, "cosine": float(cosines[i, j]), "in_top_span": float(in_span[i])}
    return out


def _default_rca(generator, directions, *, steps, batch_size, seed, device):
    from discovery.voynov import measure_rca

    return measure_rca(generator, directions, steps=steps, batch_size=batch_size, seed=seed, device=device)


def _default_chart(*args, **kwargs):
    from discovery.charts import direction_chart

    return direction_chart(*args, **kwargs)


def _label(width: int, text: str, height: int = 14) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(strip).text((3, 1), text, fill=(0, 0, 0), font=ImageFont.load_default())
    return np.asarray(strip)


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    out[: image.shape[0], : image.shape[1]] = image[:, :, :3]
    return out


def _side_by_side(columns: dict[str, list[np.ndarray]], gap: int = 8) -> np.ndarray:
    stacks = []
    for name, charts in columns.items():
        width = max(chart.shape[1] for chart in charts)
        parts = [_label(width, name, 16)]
        for chart in charts:
            parts += [_pad_to(chart, chart.shape[0], width), np.full((gap // 2, width, 3), 255, np.uint8)]
        stacks.append(np.concatenate(parts, axis=0))
    height = max(stack.shape[0] for stack in stacks)
    row = []
    for stack in stacks:
        row += [_pad_to(stack, height, stack.shape[1]), np.full((height, gap, 3), 200, np.uint8)]
    return np.concatenate(row[:-1], axis=1)


def _fmt(value, digits=4):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def compare_methods(generator, runs: dict[str, Directions], out_dir, *, rca_steps: int = 2000, timings: dict[str, float] | None = None,
                    count: int | None = None, top: int = 5, rows: int = 3, shifts: int = 7, rca_batch_size: int = 32, seed: int = 0,
                    device=None, background: bool = False, background_samples: int = 16, rca_fn: Callable | None = None,
                    chart_fn: Callable | None = None) -> dict:
    """Compare ``runs`` ({method name: Directions}) on ``generator``; write the report to ``out_dir``.

    ``rca_steps`` = 0 skips RCA. ``timings`` are the seconds each method took (reported as
    given). ``background`` scores the compared directions for background removal now
    (otherwise a "background_score" list stored in a file is used). ``rca_fn`` / ``chart_fn``
    replace ``discovery.voynov.measure_rca`` / ``discovery.charts.direction_chart``.
    """
    from discovery.images import save_png
    from discovery.io import atomic_write_text, run_manifest, write_json

    if not runs:
        raise UserError("compare: no methods to compare")
    for name, directions in runs.items():
        if directions.dim_z != generator.dim_z:
            raise UserError(f"compare: {name} directions have dim_z {directions.dim_z}, the generator {generator.dim_z}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = dict(timings or {})
    count = min(d.count for d in runs.values()) if count is None else min(int(count), *(d.count for d in runs.values()))
    runs = {name: _truncate(directions, count) for name, directions in runs.items()}
    rca_fn = rca_fn or _default_rca
    chart_fn = chart_fn or _default_chart

    methods = {}
    for name, directions in runs.items():
        entry = {
            "method": directions.method,
            "directions": directions.count,
            "shift_scale": float(directions.shift_scale),
            "time_s": timings.get(name),
            "rca": None,
            "rca_chance": 1.0 / directions.count,
        }
        if rca_steps > 0:
            entry["rca"] = float(rca_fn(generator, directions, steps=rca_steps, batch_size=rca_batch_size, seed=seed, device=device))
        for key in ("eigenvalues", "explained_variance"):
            if key in directions.stats:
                entry[key] = [float(v) for v in directions.stats[key][:top]]
        if background:
            from discovery.background import rank_background_directions

            ranking = rank_background_directions(generator, directions, samples=background_samples, seed=seed)
            entry["background"] = {"index": ranking[0]["index"], "score": ranking[0]["score"], "sign": ranking[0]["sign"]}
        else:
            scores = directions.stats.get("background_score")
            if isinstance(scores, (list, tuple)) and len(scores) == directions.count:
                values = np.array([s if s is not None else np.nan for s in scores], dtype=np.float64)
                if np.isfinite(values).any():
                    best = int(np.nanargmax(values))
                    entry["background"] = {"index": best, "score": float(values[best])}
        alignment = factor_alignment(generator, directions)
        if alignment is not None:
            entry["factor_alignment"] = alignment
        methods[name] = entry

    names = list(runs)
    m = min(top, count)
    agreement = {a: {b: float(best_cosines(runs[a].matrix[:m], runs[b].matrix[:m]).mean()) for b in names} for a in names}

    latents = generator.sample_latent(rows, torch.Generator().manual_seed(seed))
    condition = generator.sample_condition(rows, torch.Generator().manual_seed(seed + 1))
    columns = {}
    for name, directions in runs.items():
        columns[name] = [np.asarray(chart_fn(generator, directions, k, latents=latents, condition=condition, shifts=shifts, shift_scale=None))
                         for k in range(m)]
    save_png(_side_by_side(columns), out_dir / "comparison.png")

    report = {
        "generator": getattr(generator, "name", "custom"),
        "dim_z": int(generator.dim_z),
        "compared_directions": count,
        "rca_steps": rca_steps,
        "methods": methods,
        "agreement_top": {"directions": m, "mean_best_abs_cosine": agreement},
        "files": {"json": "comparison.json", "markdown": "comparison.md", "chart": "comparison.png"},
        "chart_layout": f"one column per method; its first {m} directions, each as {rows} latents x {shifts} shifts in [-shift_scale, shift_scale]",
        "manifest": run_manifest(kind="comparison", methods=names),
    }
    write_json(report, out_dir / "comparison.json")
    atomic_write_text(_markdown(report), out_dir / "comparison.md")
    return report


def _markdown(report: dict) -> str:
    lines = [
        f"# Method comparison on `{report['generator']}` (dim_z {report['dim_z']})",
        "",
        f"{report['compared_directions']} directions per method; RCA after {report['rca_steps']} reconstructor steps "
        f"(chance {1 / report['compared_directions']:.4f}).",
        "",
        "| method | RCA | time (s) | shift scale | best background direction (score) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, entry in report["methods"].items():
        bg = entry.get("background")
        bg_text = f"{bg['index']} ({bg['score']:.3f})" if bg else "-"
        lines.append(f"| {name} | {_fmt(entry['rca'])} | {_fmt(entry['time_s'], 2)} | {_fmt(entry['shift_scale'], 3)} | {bg_text} |")
    with_factors = {n: e["factor_alignment"] for n, e in report["methods"].items() if "factor_alignment" in e}
    if with_factors:
        factors = list(next(iter(with_factors.values())))
        lines += ["", "Known factors: best |cosine| of a direction with each factor (direction index).", "",
                  "| method | " + " | ".join(factors) + " |", "| --- |" + " --- |" * len(factors)]
        for name, alignment in with_factors.items():
            cells = [f"{alignment[f]['cosine']:.3f} ({alignment[f]['index']})" for f in factors]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    agreement = report["agreement_top"]["mean_best_abs_cosine"]
    names = list(agreement)
    lines += ["", f"Agreement of the top {report['agreement_top']['directions']} directions (mean best |cosine|, row vs column).", "",
              "| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for a in names:
        lines.append(f"| {a} | " + " | ".join(f"{agreement[a][b]:.3f}" for b in names) + " |")
    lines += ["", "![top directions side by side](comparison.png)", ""]
    return "\n".join(lines)
