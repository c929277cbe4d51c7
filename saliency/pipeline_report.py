"""The pipeline's HTML report: metrics against baselines, the chosen direction, pairs, curves."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from discovery.io import atomic_write_text
from discovery.runtime import get_logger

HEADLINE_METRICS = ("max_f_beta", "iou", "accuracy", "max_f", "mae", "s_measure", "max_e", "weighted_f")


def _metrics(results_path: Path) -> dict:
    results = json.loads(results_path.read_text(encoding="utf-8"))
    return results.get("metrics", results)


def _image(folder: Path, path: Path, caption: str, width: int = 480) -> str:
    if not path.exists():
        return ""
    rel = os.path.relpath(path, folder)
    return f'<figure><img src="{html.escape(rel)}" width="{width}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def metrics_table(rows: dict[str, dict], columns=HEADLINE_METRICS) -> str:
    """Markdown table, one row per method."""
    present = [c for c in columns if any(c in m for m in rows.values())]
    lines = ["| method | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for name, metrics in rows.items():
        cells = [f"{metrics[c]:.3f}" if isinstance(metrics.get(c), (int, float)) else "-" for c in present]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_pipeline_report(out: Path, folders: dict[str, Path], evaluations: dict[str, Path]) -> dict:
    rows = {name: _metrics(folder / "results.json") for name, folder in evaluations.items() if (folder / "results.json").exists()}
    table = metrics_table(rows)
    margins = {}
    if "gan-segmenter" in rows and len(rows) > 1:
        gan = rows["gan-segmenter"]
        for metric in ("iou", "max_f_beta"):
            best_name, best = max(((n, m.get(metric, float("-inf"))) for n, m in rows.items() if n != "gan-segmenter"), key=lambda t: t[1])
            margins[metric] = {"gan": gan.get(metric), "best_baseline": best_name, "baseline": best, "margin": gan.get(metric, float("nan")) - best}
    log = get_logger("pipeline")
    log.info("\n" + table + "\n")
    for metric, m in margins.items():
        log.info(f"{metric}: GAN segmenter {m['gan']:.3f} vs best baseline {m['best_baseline']} {m['baseline']:.3f} (margin {m['margin']:+.3f})")

    ranking_path = folders["discover"] / "background_ranking.json"
    ranking = json.loads(ranking_path.read_text()) if ranking_path.exists() else []
    ranking = ranking.get("ranking", ranking) if isinstance(ranking, dict) else ranking
    charts = folders["discover"] / "charts"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>saliency pipeline report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}figure{display:inline-block;margin:8px}</style></head><body>",
        "<h1>Saliency pipeline report</h1>",
        "<h2>Metrics on the evaluation set</h2>",
        _markdown_table_to_html(table),
    ]
    if margins:
        parts.append("<p>" + "<br>".join(
            f"{html.escape(k)}: GAN segmenter {v['gan']:.3f}, best baseline ({html.escape(v['best_baseline'])}) {v['baseline']:.3f}, margin {v['margin']:+.3f}"
            for k, v in margins.items()) + "</p>")
    parts.append("<h2>Discovered directions</h2>")
    if ranking:
        top = ranking[:5]
        parts.append("<p>Background-direction ranking (best first): " + ", ".join(
            f"#{r['index']} (score {r['score']:.3f})" for r in top) + "</p>")
        for r in top[:3]:
            parts.append(_image(out, charts / f"direction_{r['index']:03d}.png", f"direction {r['index']}", 420))
    parts.append(f'<p><a href="{html.escape(os.path.relpath(charts / "index.html", out))}">all direction charts</a></p>')
    parts.append("<h2>Synthetic pairs</h2>" + _image(out, folders["synthesize"] / "preview.png", "synthetic images and masks", 900))
    parts.append("<h2>Segmenter</h2>" + _image(out, folders["train_segmenter"] / "val_predictions.png", "held-out synthetic pairs: image / mask / prediction", 700))
    gan_eval = evaluations.get("gan-segmenter")
    if gan_eval is not None:
        parts.append("<h2>Evaluation curves and predictions</h2>")
        for name, caption in (("pr_curve.png", "precision-recall"), ("f_threshold.png", "F-measure vs threshold"), ("worst_best.png", "worst and best predictions")):
            parts.append(_image(out, gan_eval / name, caption, 900 if name == "worst_best.png" else 420))
    parts.append("</body></html>")
    atomic_write_text("\n".join(parts), out / "report.html")
    atomic_write_text(table + "\n", out / "metrics.md")
    return {"metrics": rows, "margins": margins, "report": str(out / "report.html")}


def _markdown_table_to_html(table: str) -> str:
    lines = [line.strip("|").split("|") for line in table.splitlines() if not line.startswith("|---")]
    head, *body = lines
    out = ["<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>" for row in body]
    return "".join(out) + "</table>"
