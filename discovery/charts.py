"""Direction charts, shared by every discovery method.

One PNG per direction: rows are latents (the same latents for every direction, so charts
compare), columns are shifts from -s to +s (the middle column, shift 0, is the original
image when the column count is odd), with a small label strip. ``charts/index.html`` shows
them all as thumbnails with the per-direction statistics of the directions file.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from discovery.directions import Directions
from discovery.errors import UserError
from discovery.generators.base import slice_condition
from discovery.images import make_grid, save_png, to_uint8

MIN_TILE = 64  # smaller images are enlarged (nearest neighbour) so a chart stays readable
LABEL_HEIGHT = 14
CHUNK = 64  # images per generator call


def _repeat_condition(condition, times: int):
    """Repeat each sample's condition ``times`` times (tensors, or tuples/lists/dicts of them)."""
    if condition is None:
        return None
    if isinstance(condition, torch.Tensor):
        return condition.repeat_interleave(times, dim=0)
    if isinstance(condition, (list, tuple)):
        return type(condition)(_repeat_condition(c, times) for c in condition)
    if isinstance(condition, dict):
        return {k: _repeat_condition(v, times) for k, v in condition.items()}
    raise TypeError(f"cannot repeat a condition of type {type(condition).__name__}")


def _format_shift(value: float) -> str:
    text = f"{value:+.1f}" if abs(value) < 100 else f"{value:+.0f}"
    return "0" if text in ("+0.0", "-0.0") else text


def _label_strip(width: int, tile: int, pad: int, title: str, amounts: list[float]) -> np.ndarray:
    strip = Image.new("RGB", (width, 2 * LABEL_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    draw.text((pad, 1), title, fill=(0, 0, 0), font=font)
    for column, amount in enumerate(amounts):
        text = _format_shift(amount)
        x = pad + column * (tile + pad) + tile // 2 - 3 * len(text)
        draw.text((x, LABEL_HEIGHT + 1), text, fill=(90, 90, 90), font=font)
    return np.asarray(strip)


@torch.no_grad()
def direction_chart(
    generator,
    directions: Directions,
    index: int,
    *,
    latents: torch.Tensor,
    condition=None,
    shifts: int = 9,
    shift_scale: float | None = None,
    title: str | None = None,
) -> np.ndarray:
    """(H, W, 3) uint8 chart of one direction: rows = ``latents``, columns = shifts in [-s, s]."""
    s = float(directions.shift_scale if shift_scale is None else shift_scale)
    direction = directions.direction(index)
    device = latents.device
    amounts = torch.linspace(-s, s, shifts) if shifts > 1 else torch.zeros(1)
    rows = latents.shape[0]
    z = latents[:, None, :] + amounts.to(device, latents.dtype)[None, :, None] * direction.to(device, latents.dtype)
    z = z.reshape(rows * len(amounts), -1)
    condition = _repeat_condition(condition, len(amounts))
    images = [
        generator(z[start : start + CHUNK], slice_condition(condition, start, start + CHUNK)).float()
        for start in range(0, z.shape[0], CHUNK)
    ]
    tiles = to_uint8(torch.cat(images))
    size = tiles.shape[1]
    if size < MIN_TILE:
        factor = math.ceil(MIN_TILE / size)
        tiles = tiles.repeat(factor, axis=1).repeat(factor, axis=2)
    pad = 2
    grid = make_grid(tiles, rows, len(amounts), pad=pad)
    label = title if title is not None else f"direction {index}"
    strip = _label_strip(grid.shape[1], tiles.shape[2], pad, label, amounts.tolist())
    return np.concatenate([strip, grid], axis=0)


def _per_direction_stats(directions: Directions) -> dict[str, list]:
    """The stats entries that hold one number per direction."""
    out = {}
    for key, value in directions.stats.items():
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if isinstance(value, (list, tuple)) and len(value) == directions.count and all(isinstance(v, (int, float)) for v in value):
            out[key] = list(value)
    return out


def _chart_order(count_total: int, order) -> list[int]:
    ranked = [int(i) for i in (order or [])]
    for i in ranked:
        if not 0 <= i < count_total:
            raise UserError(f"chart order: direction {i} out of range (0..{count_total - 1})")
    seen = set(ranked)
    return list(dict.fromkeys(ranked)) + [i for i in range(count_total) if i not in seen]


def write_direction_charts(
    generator,
    directions: Directions,
    out_dir,
    *,
    count: int | None = None,       # how many charts (the first `count` in `order`); None: every direction
    rows: int = 6,                  # latents per chart
    columns: int = 9,               # shifts per chart, from -s to +s
    seed: int = 0,                  # seeds the chart latents (the same for every direction)
    order=None,                     # direction indices to show first (e.g. a background ranking); the rest follow
    captions=None,                  # {index: text} or a list, shown on the chart and in the index
    shift_scale: float | None = None,  # chart range; None: the directions file's shift_scale
    progress: bool = False,
) -> list[Path]:
    """Write ``out_dir/charts/direction_{k:03d}.png`` and ``out_dir/charts/index.html``; return the PNG paths."""
    from tqdm import tqdm

    from discovery.io import atomic_write_text

    if rows < 1 or columns < 1:
        raise UserError(f"charts need at least one row and one column (got {rows} x {columns})")
    if count is not None and count < 0:
        raise UserError(f"--charts {count}: must not be negative")
    if directions.dim_z != generator.dim_z:
        raise UserError(f"directions have dim_z {directions.dim_z}, the generator {generator.dim_z}")
    folder = Path(out_dir) / "charts"
    folder.mkdir(parents=True, exist_ok=True)
    sequence = _chart_order(directions.count, order)
    if count is not None:
        sequence = sequence[:count]
    if isinstance(captions, (list, tuple)):
        captions = dict(enumerate(captions))
    captions = captions or {}
    sampler = torch.Generator().manual_seed(seed)
    latents = generator.sample_latent(rows, sampler)
    condition = generator.sample_condition(rows, sampler)
    paths = []
    for index in tqdm(sequence, desc="charts", unit="chart", disable=not progress):
        caption = captions.get(index)
        title = f"direction {index}" + (f": {caption}" if caption else "")
        chart = direction_chart(generator, directions, index, latents=latents, condition=condition, shifts=columns, shift_scale=shift_scale, title=title)
        path = folder / f"direction_{index:03d}.png"
        save_png(chart, path)
        paths.append(path)
    s = float(directions.shift_scale if shift_scale is None else shift_scale)
    atomic_write_text(_index_html(directions, sequence, captions, s, ranked=bool(order)), folder / "index.html")
    return paths


def _index_html(directions: Directions, sequence: list[int], captions: dict, shift_scale: float, ranked: bool) -> str:
    stats = _per_direction_stats(directions)
    keys = sorted(stats, key=lambda k: (k != "background_score", k))  # the background score first when present
    esc = html.escape
    cards = []
    for position, index in enumerate(sequence):
        lines = "".join(f"<li><b>{esc(k)}</b> {stats[k][index]:.4g}</li>" for k in keys)
        caption = f"<p class='caption'>{esc(str(captions[index]))}</p>" if captions.get(index) else ""
        rank = f"#{position + 1} &middot; " if ranked else ""
        name = f"direction_{index:03d}.png"
        cards.append(
            f"<figure id='d{index}'><a href='{name}'><img src='{name}' loading='lazy' alt='direction {index}'></a>"
            f"<figcaption><h2>{rank}direction {index}</h2>{caption}<ul>{lines}</ul></figcaption></figure>"
        )
    title = f"{directions.method} directions of {directions.generator}"
    order_note = "ranked order first (background score when present), then by index" if ranked else "by index"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 1em; }}
figure {{ margin: 0; border: 1px solid #ccc; padding: .5em; }}
img {{ width: 100%; image-rendering: pixelated; }}
h2 {{ font-size: 1em; margin: .3em 0; }}
ul {{ margin: 0; padding-left: 1.2em; font-size: .85em; }}
.caption {{ margin: .2em 0; font-style: italic; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>{directions.count} directions, latent dimension {directions.dim_z}; charts show {len(sequence)} of them, {order_note}.
Rows are latents, columns shifts from {-shift_scale:g} to {shift_scale:g} along the direction.</p>
<main>
{chr(10).join(cards)}
</main></body></html>
"""
