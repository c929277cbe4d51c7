"""The evaluation report: data first (``results.json``), then renderings of it.

``write_report`` writes, in this order: ``results.json`` (every number, curve and per-image score),
``results.md`` (the paper metrics beside the published figures, then the toolbox metrics),
``pr_curve.png``, ``f_threshold.png``, ``worst_best.png`` (image / GT / prediction for the images with
the lowest and highest IoU) and ``summary.json`` (the headline numbers; written last, so its presence
means the evaluation finished).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from discovery.io import atomic_write_bytes, atomic_write_text, write_json

# Accuracy / IoU / max F_beta (design, Evaluation protocol). None: not reported by the paper.
PUBLISHED = {
    "ECSSD": [
        ("BigBiGAN (Voynov et al. 2021)", 0.899, 0.672, 0.782),
        ("E-BigBiGAN (Voynov et al. 2021)", 0.906, 0.684, 0.797),
        ("Melas-Kyriazi et al. 2022", 0.915, 0.713, None),
        ("TokenCut (Wang et al. 2022)", 0.918, 0.712, 0.803),
        ("conditional BigGAN-128 (Melas-Kyriazi et al. 2022, Table 2)", 0.848, 0.424, None),
    ],
    "DUTS-TE": [
        ("BigBiGAN (Voynov et al. 2021)", 0.878, 0.498, 0.608),
        ("E-BigBiGAN (Voynov et al. 2021)", 0.882, 0.511, 0.624),
        ("TokenCut (Wang et al. 2022)", 0.903, 0.576, 0.672),
        ("conditional BigGAN-128 (Melas-Kyriazi et al. 2022, Table 2)", 0.876, 0.303, None),
    ],
    "DUT-OMRON": [
        ("BigBiGAN (Voynov et al. 2021)", 0.856, 0.453, 0.549),
        ("E-BigBiGAN (Voynov et al. 2021)", 0.860, 0.464, 0.563),
        ("TokenCut (Wang et al. 2022)", 0.880, 0.533, 0.600),
        ("conditional BigGAN-128 (Melas-Kyriazi et al. 2022, Table 2)", 0.883, 0.316, None),
    ],
}

TOOLBOX_COLUMNS = (
    ("max_f", "max F"),
    ("mean_f", "mean F"),
    ("adaptive_f", "adaptive F"),
    ("mae", "MAE"),
    ("s_measure", "S-measure"),
    ("mean_e", "mean E"),
    ("max_e", "max E"),
    ("adaptive_e", "adaptive E"),
    ("weighted_f", "weighted F"),
    ("max_iou", "max IoU"),
)

CONVENTIONS = """\
Conventions. Masks: object where the grey value >= 128. Paper metrics: max_f_beta = max over t in
arange(0, 1, 1/255) of the mean over images of F_0.3 of (pred > t) (P = 1 for an empty prediction,
R = 1 for an empty GT, NaN -> 0); IoU and accuracy of pred >= 0.5 per image, averaged. Toolbox
metrics as pysodmetrics 1.6 computes them on the maps as given (no min-max stretching unless
--minmax-normalize): max F is the maximum F of the dataset-mean precision and recall curves over 256
thresholds, mean F the mean over thresholds of the mean per-image F curve, adaptive F / E at twice
the mean prediction; S-measure alpha 0.5; weighted F with beta 1; max IoU of the mean per-image IoU
curve."""


def published_figures(dataset_name: str) -> list[dict]:
    return [{"method": m, "accuracy": a, "iou": i, "max_f_beta": f} for m, a, i, f in PUBLISHED.get(dataset_name, [])]


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def results_markdown(results: dict) -> str:
    m = results["metrics"]
    data = results["dataset"]
    split = f", split {data['split']}" if data.get("split") else ""
    partial = "" if data.get("complete", True) else f" (partial copy: {data['count']} of {data['expected_count']} images)"
    lines = [
        f"# Evaluation of {results['name']} on {data['name']}",
        "",
        f"{data['count']} images{split}{partial}, from `{data['root']}`.",
        "",
        "## Paper metrics beside the published figures",
        "",
        "| method | accuracy | IoU | max F_beta |",
        "|---|---|---|---|",
        f"| **{results['name']} (this run)** | **{m['accuracy']:.3f}** | **{m['iou']:.3f}** | **{m['max_f_beta']:.3f}** |",
    ]
    published = results.get("published") or []
    for row in published:
        lines.append(f"| {row['method']} | {_fmt(row['accuracy'])} | {_fmt(row['iou'])} | {_fmt(row['max_f_beta'])} |")
    if not published:
        lines += ["", f"No published figures for {data['name']}; the GAN-saliency papers report ECSSD, DUTS-TE and DUT-OMRON."]
    lines += [
        "",
        "## Salient-object-detection toolbox metrics",
        "",
        "| " + " | ".join(label for _, label in TOOLBOX_COLUMNS) + " |",
        "|" + "---|" * len(TOOLBOX_COLUMNS),
        "| " + " | ".join(f"{m[key]:.3f}" for key, _ in TOOLBOX_COLUMNS) + " |",
        "",
        f"max F_beta is reached at threshold {m['max_f_beta_threshold']:.3f}.",
        "",
        CONVENTIONS,
        "",
    ]
    return "\n".join(lines)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.11, top=0.92)  # fixed margins: one draw, not two
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def pr_curve_png(results: dict) -> bytes:
    c, m = results["curves"], results["metrics"]
    precision, recall = np.asarray(c["precision"]), np.asarray(c["recall"])
    figure = _figure(5, 5)
    ax = figure.add_subplot()
    shown = recall > 0  # the top thresholds, where no pixel is predicted, sit at (0, 0) by convention
    ax.plot(recall[shown], precision[shown], lw=2, label=f"{results['name']} (max F {m['max_f']:.3f})")
    best = int(np.argmax(np.asarray(c["f_classic"])))
    ax.plot([recall[best]], [precision[best]], "o", color="C3", label=f"max F at t = {best}/255")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"Precision-recall on {results['dataset']['name']} ({results['dataset']['count']} images)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _png(figure)


def f_threshold_png(results: dict) -> bytes:
    c, m = results["curves"], results["metrics"]
    figure = _figure(6, 4.5)
    ax = figure.add_subplot()
    ax.plot(c["paper_thresholds"], c["f_beta"], lw=2, label=f"mean F_beta of pred > t (max {m['max_f_beta']:.3f})")
    ax.plot(c["toolbox_thresholds"], c["f_mean"], lw=1.5, ls="--", label=f"toolbox mean F of pred >= t (mean {m['mean_f']:.3f})")
    ax.plot(c["toolbox_thresholds"], c["f_classic"], lw=1, ls=":", label=f"F of mean P, R (max {m['max_f']:.3f})")
    ax.axvline(m["max_f_beta_threshold"], color="C3", lw=0.8, alpha=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("threshold t")
    ax.set_ylabel("F-measure (beta^2 = 0.3)")
    ax.set_title(f"F-measure against threshold: {results['name']} on {results['dataset']['name']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower center", fontsize=8)
    return _png(figure)


def _thumbnail(array: np.ndarray, height: int) -> np.ndarray:
    """uint8 HxWx3 at the given height (masks and maps shown in grey)."""
    import cv2

    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    h, w = array.shape[:2]
    size = (max(1, round(w * height / h)), height)
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA if h > height else cv2.INTER_LINEAR)


def worst_best_png(results: dict, grid: list[dict], height: int = 128, pad: int = 6, label: int = 30) -> bytes:
    """Columns of image / ground truth / prediction, worst images by IoU first, then the best."""
    from PIL import Image, ImageDraw

    columns = [[_thumbnail(item[key], height) for key in ("image", "gt", "pred")] for item in grid]
    widths = [max(t.shape[1] for t in column) for column in columns]
    title = 22
    canvas = np.full((title + label + 3 * (height + pad) + pad, sum(widths) + pad * (len(widths) + 1), 3), 255, np.uint8)
    x = pad
    for column, width in zip(columns, widths):
        for row, thumb in enumerate(column):
            y = title + label + pad + row * (height + pad)
            canvas[y : y + height, x : x + thumb.shape[1]] = thumb
        x += width + pad
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    draw.text((pad, 4), f"{results['name']} on {results['dataset']['name']}: worst and best images by IoU at 0.5 (rows: image, ground truth, prediction)", fill=(0, 0, 0))
    x = pad
    for item, width in zip(grid, widths):
        colour = (180, 0, 0) if item["label"] == "worst" else (0, 120, 0)
        draw.text((x, title), f"{item['label']}: {item['stem']}"[: max(8, width // 6)], fill=colour)
        draw.text((x, title + 12), f"IoU {item['iou']:.3f}", fill=colour)
        x += width + pad
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def summary_of(results: dict, files: dict) -> dict:
    return {
        "name": results["name"],
        "dataset": results["dataset"]["name"],
        "split": results["dataset"].get("split"),
        "count": results["dataset"]["count"],
        "metrics": {k: v for k, v in results["metrics"].items()},
        "published": results.get("published", []),
        "files": files,
    }


def write_report(results: dict, out_dir: str | Path, grid: list[dict] | None = None) -> dict:
    """Write the report files; return their paths by role."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"results": out / "results.json", "markdown": out / "results.md", "pr_curve": out / "pr_curve.png", "f_threshold": out / "f_threshold.png"}
    write_json(results, files["results"])
    atomic_write_text(results_markdown(results), files["markdown"])
    atomic_write_bytes(pr_curve_png(results), files["pr_curve"])
    atomic_write_bytes(f_threshold_png(results), files["f_threshold"])
    if grid:
        files["worst_best"] = out / "worst_best.png"
        atomic_write_bytes(worst_best_png(results, grid), files["worst_best"])
    files = {k: str(v) for k, v in files.items()}
    write_json(summary_of(results, files), out / "summary.json")
    files["summary"] = str(out / "summary.json")
    return files
