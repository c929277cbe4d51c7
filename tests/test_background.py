"""Automatic choice of the background direction on the procedural generator (known factors)."""

import json

import pytest
import torch

from discovery.background import (
    background_stats,
    choose_background,
    record_ranking,
    otsu_split,
    rank_background_directions,
    write_background_report,
)
from discovery.directions import Directions
from discovery.errors import UserError

BACKGROUND = 3  # index of background_brightness in procedural.FACTORS


def _factor_basis(G) -> torch.Tensor:
    """The five factor directions first, then the latent directions that change nothing."""
    return torch.cat([torch.stack(list(G.factor_directions.values())), G.basis[5:]])


def test_otsu_split():
    rng = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randn(2, 300, generator=rng) * 0.01, 1 + torch.randn(2, 100, generator=rng) * 0.01], 1)
    threshold, separability = otsu_split(values)
    assert torch.all((threshold > 0.1) & (threshold < 0.9)) and torch.all(separability > 0.95)
    threshold, separability = otsu_split(torch.full((1, 50), 0.3))
    assert separability.item() == 0 and threshold.item() == pytest.approx(0.3)


def test_background_factor_wins_in_factor_and_shuffled_order(procedural_generator):
    G = procedural_generator
    directions = Directions(_factor_basis(G), "procedural", "truth", shift_scale=3.0)
    ranking = rank_background_directions(G, directions, samples=16)
    assert [entry["rank"] for entry in ranking] == list(range(G.dim_z))
    best = ranking[0]
    assert best["index"] == BACKGROUND
    assert best["score"] > 2 * ranking[1]["score"]
    # background = 0.8 tanh(f / 2): the negative shift darkens it.
    assert best["sign"] == -1
    for key in ("bimodality", "border", "strength", "background_motion", "area", "agreement"):
        assert 0 <= best[key] <= 1
    assert best["border"] > 0.9 and best["background_motion"] > 0.9 and best["agreement"] > 0.8

    order = torch.randperm(G.dim_z, generator=torch.Generator().manual_seed(3))
    shuffled = Directions(directions.matrix[order], "procedural", "truth", shift_scale=3.0)
    flipped = shuffled.matrix.clone()
    flipped[order.tolist().index(BACKGROUND)] *= -1  # the chooser also reports the flipped sign
    index, sign, source = choose_background(G, Directions(flipped, "procedural", "truth", 3.0), samples=16)
    assert order[index] == BACKGROUND and sign == 1 and "computed" in source
    assert choose_background(G, shuffled, samples=12, seed=5)[0] == order.tolist().index(BACKGROUND)
    assert shuffled.background["index"] == order.tolist().index(BACKGROUND)  # recorded in the directions


def test_chooser_on_hessian_directions_and_stored_scores(procedural_generator, tmp_path):
    from discovery.hessian import discover_hessian

    G = procedural_generator
    hessian = discover_hessian(G, samples=2, progress=False, homogeneity=False)
    ranking = rank_background_directions(G, hessian, samples=12)
    best = ranking[0]["index"]
    assert abs(float(hessian.matrix[best] @ G.factor_directions["background_brightness"])) > 0.95

    record_ranking(hessian, ranking)
    assert len(hessian.stats["background_score"]) == hessian.count
    assert hessian.stats["background_score"] == background_stats(ranking, hessian.count)["background_score"]
    hessian.save(tmp_path / "copied-and-renamed.pt")  # the decision travels inside the file
    reloaded = Directions.load(tmp_path / "copied-and-renamed.pt")
    assert choose_background(G, reloaded)[:2] == (best, ranking[0]["sign"])
    hessian.set_background(best + 1, -1, "a person")  # a human choice wins over the scores
    assert choose_background(G, hessian) == (best + 1, -1, "a person")

    report = write_background_report(G, hessian, ranking, tmp_path, top=2, samples=2)
    assert report["best_index"] == best
    saved = json.loads((tmp_path / "background_ranking.json").read_text())
    assert saved["ranking"][0]["index"] == best and len(saved["ranking"]) == hessian.count
    assert (tmp_path / "background_candidates.png").stat().st_size > 100

    with pytest.raises(UserError, match="dim_z"):
        rank_background_directions(G, Directions(torch.eye(3), "x", "y"))
