"""`saliency discover` end to end on the procedural generator, plus the direction charts."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from discovery.charts import direction_chart, write_direction_charts
from discovery.directions import Directions, load_directions
from discovery.generators import create_generator
from saliency.cli import main

QUICK = ["--generator", "procedural", "--device", "cpu", "--batch-size", "4", "--rca-samples", "16", "--log-every", "1"]


def _run(capsys, *argv):
    code = main(["discover", *QUICK, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_discover_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = _run(capsys, "--out", str(out), "--steps", "3", "--checkpoint-every", "2", "--baselines", "--baseline-steps", "2",
                           "--chart-rows", "2", "--chart-columns", "3")  # fmt: skip
    assert code == 0
    for name in ("directions.pt", "summary.json", "checkpoint.pt", "stats.csv", "stats.jsonl", "charts/index.html"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    directions = load_directions(out / "directions.pt")
    assert directions.matrix.shape == (8, 8) and directions.method == "voynov" and directions.generator == "procedural"
    charts = sorted((out / "charts").glob("direction_*.png"))
    assert len(charts) == 8
    index = (out / "charts" / "index.html").read_text()
    assert all(path.name in index for path in charts)
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["rca"] <= 1 and set(summary["baselines"]) == {"random", "identity"} and summary["charts"] == 8
    assert "RCA" in stdout.splitlines()[-1]
    ranking = json.loads((out / "background_ranking.json").read_text())["ranking"]
    assert directions.background["index"] == ranking[0]["index"] and directions.background["sign"] == ranking[0]["sign"]
    assert len(directions.stats["background_score"]) == 8
    first = ranking[0]["index"]
    assert index.index(f"direction_{first:03d}.png") < min(index.index(p.name) for p in charts if p.name != f"direction_{first:03d}.png")


def test_cli_resume_matches_an_uninterrupted_run(tmp_path, capsys):
    common = ["--no-baselines", "--charts", "0", "--checkpoint-every", "2", "--seed", "5"]
    assert _run(capsys, "--out", str(tmp_path / "whole"), "--steps", "6", *common)[0] == 0
    assert _run(capsys, "--out", str(tmp_path / "split"), "--steps", "4", *common)[0] == 0
    assert _run(capsys, "--out", str(tmp_path / "split"), "--steps", "6", "--resume", *common)[0] == 0
    whole, split = (load_directions(tmp_path / name / "directions.pt") for name in ("whole", "split"))
    assert torch.equal(whole.matrix, split.matrix)
    assert json.loads((tmp_path / "whole" / "summary.json").read_text())["rca"] == json.loads((tmp_path / "split" / "summary.json").read_text())["rca"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--generator", "no-such-gan"], "unknown generator"),
        (["--weights", "/no/such/weights.pt", "--generator", "tiny-dcgan"], "--weights"),
        (["--deformator", "ortho", "--directions", "9"], "at most dim_z"),
        (["--steps", "0"], "--steps"),
        (["--min-shift", "9"], "--min-shift"),
        (["--resume"], "no checkpoint.pt"),
        (["--method", "ganspace", "--resume"], "--resume"),
        (["--method", "sefa", "--steps", "3"], "--steps: does not apply to --method sefa"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    if "--method" in argv:  # QUICK holds voynov options, which other methods refuse
        code = main(["discover", "--generator", "procedural", "--device", "cpu", "--out", str(out), *argv])
        err = capsys.readouterr().err
    else:
        code, _, err = _run(capsys, "--out", str(out), "--steps", "2", *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saliency discover: error:") and message in lines[0], err
    assert not out.exists()


def test_existing_run_needs_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(capsys, "--out", str(out), "--steps", "2", "--no-baselines", "--charts", "0")[0] == 0
    code, _, err = _run(capsys, "--out", str(out), "--steps", "2")
    assert code == 2 and "--resume" in err


def test_direction_chart_layout():
    G = create_generator("procedural")
    directions = Directions(torch.stack(list(G.factor_directions.values())), "procedural", "truth", shift_scale=3.0)
    latents = G.sample_latent(3, torch.Generator().manual_seed(0))
    chart = direction_chart(G, directions, 0, latents=latents, shifts=5)
    assert chart.dtype == np.uint8 and chart.ndim == 3 and chart.shape[2] == 3
    tile = 64  # 32-px images are enlarged to 64 px
    assert chart.shape[1] == 5 * (tile + 2) + 2 and chart.shape[0] >= 3 * (tile + 2) + 2
    grid = chart[-(3 * (tile + 2) + 2) :]
    first, middle, last = (grid[2 : 2 + tile, 2 + c * (tile + 2) : 2 + c * (tile + 2) + tile] for c in (0, 2, 4))
    original = G(latents[:1]).add(1).mul(127.5).round().clamp(0, 255).byte()[0].permute(1, 2, 0).numpy()
    assert np.abs(middle[::2, ::2].astype(int) - original.astype(int)).max() <= 1  # shift 0 is the original image
    assert np.abs(first.astype(int) - last.astype(int)).mean() > 5  # the x-position direction moves the disc


def test_write_direction_charts_order_count_and_stats(tmp_path):
    G = create_generator("procedural")
    matrix = torch.eye(8)[:4]
    directions = Directions(matrix, "procedural", "test", stats={"accuracy": [0.1, 0.2, 0.3, 0.4], "background_score": [1.0, 4.0, 2.0, 3.0]})
    paths = write_direction_charts(G, directions, tmp_path, count=3, rows=2, columns=3, order=[1, 3], captions={1: "background"})
    assert [p.name for p in paths] == ["direction_001.png", "direction_003.png", "direction_000.png"]
    assert Image.open(paths[0]).size[0] == 3 * 66 + 2
    index = (tmp_path / "charts" / "index.html").read_text()
    assert index.index("direction_001.png") < index.index("direction_003.png") < index.index("direction_000.png")
    assert "direction_002.png" not in index and "background_score" in index and "background" in index
