"""Automatic choice of the background-removal direction.

The saliency papers (Voynov & Babenko 2020, Voynov et al. 2021, Melas-Kyriazi et al. 2022)
pick the direction that removes or dims the background by looking at direction charts.
Here every direction gets a score from unlabelled samples: for latents z and a shift s,

    x = G(z),  x+ = G(z + s d),  x- = G(z - s d),
    change+ = gray(x+) - gray(x),  change- = gray(x-) - gray(x)   (gray in [0, 1]).

For each image and each sign, Otsu's threshold splits the per-pixel change in two classes;
the class that holds most of the image border is the background, the other the object.
Components (each in [0, 1], averaged over latents):

* ``bimodality``: Otsu's separability, between-class / total variance of the change;
* ``border``: how consistently the border falls in one class (2 * fraction - 1);
* ``strength``: the contrast between the classes' mean change, saturating at 0.15;
* ``background_motion``: |change on the background| / max(|change on bg|, |change on object|):
  1 when the background is what moves (not so for object size, position or colour);
* ``area``: fraction of latents whose object area lies in (0.05, 0.6), times a stability
  term 1 - std(area) / 0.3 (clipped at 0);
* ``agreement``: the +/- shifts split the image alike (mean IoU of their object masks) and
  move the background in opposite directions (fraction of latents where they do).

Score of a sign = bimodality * border * strength * background_motion * area; score of a
direction = max over signs * (0.5 + 0.5 * agreement). ``sign`` in the result is the shift
sign along which the background gets darker relative to the object (``z + sign * s * d``
dims / removes the background); ``z - sign * s * d`` brightens it (the white-background
rule of Voynov & Babenko 2020 wants that side).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from discovery.directions import Directions
from discovery.errors import UserError
from discovery.generators.base import device_for, generate, parameter_dtype, slice_condition

AREA_RANGE = (0.05, 0.6)
STRENGTH_SCALE = 0.15  # intensity contrast (gray in [0, 1]) at which strength saturates
AREA_STD_SCALE = 0.3
BINS = 64


def _gray01(images: torch.Tensor) -> torch.Tensor:
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    if images.shape[1] == 1:
        gray = images[:, 0]
    else:
        gray = (images[:, :3] * weights).sum(1)
    return gray.add(1).mul(0.5).clamp(0, 1)


def otsu_split(values: torch.Tensor, bins: int = BINS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row Otsu threshold of values (N, P): (threshold (N,), separability (N,) in [0, 1]).

    Separability is the between-class variance at the threshold over the total variance
    (Otsu's effectiveness measure); rows with no spread get 0 and a threshold at their value.
    """
    values = values.double()
    low, high = values.min(1).values, values.max(1).values
    spread = (high - low).clamp_min(1e-12)
    flat = spread <= 1e-9
    normalized = (values - low[:, None]) / spread[:, None]
    index = (normalized * (bins - 1)).round().long().clamp(0, bins - 1)
    histogram = torch.zeros(values.shape[0], bins, dtype=torch.float64, device=values.device)
    histogram.scatter_add_(1, index, torch.ones_like(normalized))
    probability = histogram / values.shape[1]
    centers = torch.linspace(0, 1, bins, dtype=torch.float64, device=values.device)
    omega = probability.cumsum(1)
    mu = (probability * centers).cumsum(1)
    mu_total = mu[:, -1:]
    between = (mu_total * omega - mu).pow(2) / (omega * (1 - omega)).clamp_min(1e-12)
    between[:, -1] = 0
    # The middle of the plateau of best thresholds (between two separated modes every threshold
    # in the gap is equally good; the middle one is the natural split).
    first = between.argmax(1)
    last = bins - 1 - (between >= between.max(1, keepdim=True).values * (1 - 1e-9)).flip(1).double().argmax(1)
    best = (first + last) // 2
    total_variance = (probability * (centers - mu_total).pow(2)).sum(1)
    separability = (between.gather(1, best[:, None]).squeeze(1) / total_variance.clamp_min(1e-30)).clamp(0, 1)
    threshold = low + (centers[best] + 0.5 / (bins - 1)) * spread
    separability[flat] = 0
    threshold[flat] = high[flat]
    return threshold, separability


def _border_mask(h: int, w: int, device) -> torch.Tensor:
    width = max(1, min(h, w) // 32)
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    mask[:width], mask[-width:], mask[:, :width], mask[:, -width:] = True, True, True, True
    return mask


def split_change(change: torch.Tensor) -> dict:
    """Analyse per-pixel changes (N, H, W): object masks and per-image measures (see module doc)."""
    n, h, w = change.shape
    flat = change.reshape(n, -1).double()
    threshold, separability = otsu_split(flat)
    high = flat > threshold[:, None]
    border = _border_mask(h, w, change.device).reshape(-1)
    border_high = high[:, border].double().mean(1)
    background_is_high = border_high >= 0.5
    border_consistency = (2 * torch.maximum(border_high, 1 - border_high) - 1).clamp(0, 1)
    background = torch.where(background_is_high[:, None], high, ~high)
    obj = ~background
    area = obj.double().mean(1)
    count_bg = background.double().sum(1).clamp_min(1)
    count_obj = obj.double().sum(1)
    mean_bg = (flat * background).sum(1) / count_bg
    mean_obj = torch.where(count_obj > 0, (flat * obj).sum(1) / count_obj.clamp_min(1), torch.zeros_like(count_obj))
    contrast = (mean_bg - mean_obj).abs()
    contrast[count_obj == 0] = 0
    motion = mean_bg.abs() / torch.maximum(mean_bg.abs(), mean_obj.abs()).clamp_min(1e-12)
    return {
        "masks": obj.reshape(n, h, w),
        "separability": separability,
        "border": border_consistency,
        "area": area,
        "contrast": contrast,
        "relative_background_change": mean_bg - mean_obj,
        "motion": motion,
    }


def _sign_score(parts: dict) -> dict:
    area = parts["area"]
    in_range = ((area > AREA_RANGE[0]) & (area < AREA_RANGE[1])).double().mean()
    stability = (1 - area.std(unbiased=False) / AREA_STD_SCALE).clamp(0, 1) if area.numel() > 1 else torch.tensor(1.0)
    components = {
        "bimodality": float(parts["separability"].mean()),
        "border": float(parts["border"].mean()),
        "strength": float((parts["contrast"] / STRENGTH_SCALE).clamp(max=1).mean()),
        "background_motion": float(parts["motion"].mean()),
        "area": float(in_range * stability),
        "area_mean": float(area.mean()),
        "area_std": float(area.std(unbiased=False)) if area.numel() > 1 else 0.0,
        "relative_background_change": float(parts["relative_background_change"].mean()),
    }
    score = 1.0
    for key in ("bimodality", "border", "strength", "background_motion", "area"):
        score *= components[key]
    components["score"] = score
    return components


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    union = (a | b).double().sum(1)
    inter = (a & b).double().sum(1)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def score_direction(original: torch.Tensor, plus: torch.Tensor, minus: torch.Tensor) -> dict:
    """Score one direction from images (N, C, H, W) in [-1, 1] at z, z + s d and z - s d."""
    g0 = _gray01(original.float())
    parts = {"+": split_change(_gray01(plus.float()) - g0), "-": split_change(_gray01(minus.float()) - g0)}
    sides = {key: _sign_score(value) for key, value in parts.items()}
    mask_agreement = float(_iou(parts["+"]["masks"], parts["-"]["masks"]).mean())
    opposite = float(
        (torch.sign(parts["+"]["relative_background_change"]) * torch.sign(parts["-"]["relative_background_change"]) < 0).double().mean()
    )
    agreement = mask_agreement * opposite
    best = "+" if sides["+"]["score"] >= sides["-"]["score"] else "-"
    other = "-" if best == "+" else "+"
    # Which shift darkens the background: the best side's own change, or the other side's mirrored.
    relative = sides[best]["relative_background_change"]
    dims_on_best = relative < 0 if abs(relative) > 1e-9 else sides[other]["relative_background_change"] > 0
    sign = (1 if best == "+" else -1) * (1 if dims_on_best else -1)
    score = sides[best]["score"] * (0.5 + 0.5 * agreement)
    result = {
        "score": float(score),
        "sign": int(sign),
        "best_side": best,
        "agreement": float(agreement),
        "mask_agreement": mask_agreement,
        "opposite_background_change": opposite,
    }
    for key in ("bimodality", "border", "strength", "background_motion", "area", "area_mean", "area_std"):
        result[key] = sides[best][key]
    result["plus"] = sides["+"]
    result["minus"] = sides["-"]
    return result


def _default_shift(directions: Directions, index: int) -> float:
    scales = directions.stats.get("shift_scales")
    if isinstance(scales, (list, tuple)) and len(scales) == directions.count:
        value = float(scales[index])
        if math.isfinite(value) and value > 0:
            return value
    return float(directions.shift_scale)


def rank_background_directions(generator, directions: Directions, *, samples: int = 32, shift: float | None = None, seed: int = 0,
                               batch_size: int = 16, indices=None, device=None, progress: bool = False) -> list[dict]:
    """Score every direction (or ``indices``) as a background-removal direction; best first.

    Each dict: "index", "score", "sign" (the shift sign that dims the background), "shift"
    (the magnitude used: ``shift`` or, by default, the direction's own ``stats["shift_scales"]``
    entry when the file has one, else ``directions.shift_scale``), and the components (see the
    module docstring) with the per-sign details under "plus" / "minus".
    """
    from tqdm.auto import tqdm


    if directions.dim_z != generator.dim_z:
        raise UserError(f"the directions have dim_z {directions.dim_z} but the generator's latent size is {generator.dim_z}")
    if samples < 1:
        raise UserError(f"--samples {samples}: need at least one latent")
    device = device_for(device, generator)
    generator = generator.to(device)
    dtype = parameter_dtype(generator)
    indices = list(range(directions.count)) if indices is None else [int(i) for i in indices]
    rng = torch.Generator().manual_seed(seed)
    latents = generator.sample_latent(samples, rng).to(device=device, dtype=dtype)
    conditions = generator.sample_condition(samples, rng)
    batches = [(start, min(samples, start + batch_size)) for start in range(0, samples, batch_size)]
    with torch.no_grad():
        originals = [generate(generator, latents[a:b], slice_condition(conditions, a, b)).float().cpu() for a, b in batches]
        original = torch.cat(originals)
        ranking = []
        for index in tqdm(indices, desc="background", disable=not progress):
            amount = float(shift) if shift is not None else _default_shift(directions, index)
            d = directions.direction(index).to(device=device, dtype=dtype)
            plus, minus = [], []
            for a, b in batches:
                condition = slice_condition(conditions, a, b)
                plus.append(generate(generator, latents[a:b] + amount * d, condition).float().cpu())
                minus.append(generate(generator, latents[a:b] - amount * d, condition).float().cpu())
            result = score_direction(original, torch.cat(plus), torch.cat(minus))
            ranking.append({"index": index, "shift": amount, **result})
    ranking.sort(key=lambda r: (-r["score"], r["index"]))
    for rank, entry in enumerate(ranking):
        entry["rank"] = rank
    return ranking


def background_stats(ranking: list[dict], count: int) -> dict:
    """Per-direction lists (length ``count``) to store in ``Directions.stats``:
    "background_score" and "background_sign" (NaN / 0 for directions that were not scored)."""
    scores = [float("nan")] * count
    signs = [0] * count
    for entry in ranking:
        scores[entry["index"]] = float(entry["score"])
        signs[entry["index"]] = int(entry["sign"])
    return {"background_score": scores, "background_sign": signs}


def record_ranking(directions: Directions, ranking: list[dict], source: str = "background ranking") -> None:
    """Store a ranking in the file's fields: per-direction scores and signs, and the decision itself."""
    if not ranking:
        raise UserError("the directions file holds no directions to choose from")
    directions.stats.update(background_stats(ranking, directions.count))
    best = ranking[0]
    directions.set_background(int(best["index"]), int(best["sign"]) or 1, source, float(best["score"]))


def choose_background(generator, directions: Directions, *, seed: int = 0, progress: bool = False, **kw) -> tuple[int, int, str]:
    """The background direction: ``(index, sign that dims the background, where the choice came from)``.

    The one place this decision is made. A file that carries it (``directions.background``, set
    by ``saliency discover`` or by a person) is taken at its word; otherwise every direction is
    scored with ``rank_background_directions`` (keywords go there) and the result is recorded
    in ``directions`` so that saving the file keeps it.
    """
    if directions.background is not None:
        choice = directions.background
        return int(choice["index"]), int(choice["sign"]), str(choice.get("source", "file"))
    ranking = rank_background_directions(generator, directions, seed=seed, progress=progress, **kw)
    record_ranking(directions, ranking)
    return directions.background["index"], directions.background["sign"], "background ranking (computed now)"


def _summary_entry(entry: dict) -> dict:
    keep = ("rank", "index", "score", "sign", "shift", "bimodality", "border", "strength", "background_motion", "area", "area_mean",
            "area_std", "agreement", "mask_agreement", "opposite_background_change")
    return {key: entry[key] for key in keep if key in entry}


def write_background_report(generator, directions: Directions, ranking: list[dict], out_dir, *, top: int = 5, samples: int = 6,
                            seed: int = 1) -> dict:
    """``background_ranking.json`` (the ranked list) and ``background_candidates.png``: one row per
    candidate (the ``top`` best), per latent the original, dimmed (z + sign s d), brightened
    (z - sign s d) image and the object mask."""
    from discovery.images import make_grid, save_png, to_uint8
    from discovery.io import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "generator": directions.generator,
        "method": directions.method,
        "best_index": ranking[0]["index"] if ranking else None,
        "best_sign": ranking[0]["sign"] if ranking else None,
        "ranking": [_summary_entry(entry) for entry in ranking],
        "files": {"json": "background_ranking.json", "chart": "background_candidates.png"},
        "chart_layout": "one row per candidate, best first; per latent four tiles: original | z + sign*shift*d (background dimmed) | z - sign*shift*d | object mask",
    }
    device, dtype = generator.device, parameter_dtype(generator)
    rng = torch.Generator().manual_seed(seed)
    latents = generator.sample_latent(samples, rng).to(device=device, dtype=dtype)
    condition = slice_condition(generator.sample_condition(samples, rng), 0, samples)
    tiles = []
    rgb = lambda x: x[:, :1].expand(-1, 3, -1, -1) if x.shape[1] != 3 else x  # noqa: E731
    with torch.no_grad():
        original = generate(generator, latents, condition).float().cpu()
        for entry in ranking[:top]:
            d = directions.direction(entry["index"]).to(device=device, dtype=dtype)
            step = entry["sign"] * entry["shift"]
            dimmed = generate(generator, latents + step * d, condition).float().cpu()
            bright = generate(generator, latents - step * d, condition).float().cpu()
            mask = split_change(_gray01(dimmed) - _gray01(original))["masks"].float() * 2 - 1
            row = [rgb(original), rgb(dimmed), rgb(bright), mask[:, None].expand(-1, 3, -1, -1)]
            for i in range(samples):
                tiles.extend(x[i] for x in row)
    if tiles:
        array = to_uint8(torch.stack(tiles))
        if array.shape[1] < 64:  # small generators: enlarge the tiles so the chart is readable
            factor = math.ceil(64 / array.shape[1])
            array = array.repeat(factor, axis=1).repeat(factor, axis=2)
        save_png(make_grid(array, rows=len(tiles) // (4 * samples), cols=4 * samples), out_dir / "background_candidates.png")
    write_json(report, out_dir / "background_ranking.json")
    return report
