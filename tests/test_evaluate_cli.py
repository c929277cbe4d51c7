"""``saliency evaluate``: saved maps, baselines and a segmenter checkpoint on tiny fixtures; bad input is
one stderr line, exit code 2 and no output folder."""

import json

import numpy as np
import pytest
from PIL import Image

from saliency.cli import main

METRICS = ("max_f_beta", "iou", "accuracy", "max_f", "mean_f", "adaptive_f", "mae", "s_measure", "mean_e", "max_e", "adaptive_e", "weighted_f", "max_iou")
SIZES = [(20, 30), (24, 24), (18, 40), (30, 22), (16, 16), (26, 34)]  # (h, w)


def _mask(h, w, i):
    yy, xx = np.mgrid[:h, :w]
    return (((yy - h / 2) / (h / 3.5)) ** 2 + ((xx - w / 2 - i % 3) / (w / 4)) ** 2 < 1).astype(np.uint8) * 255


@pytest.fixture
def dataset(tmp_path):
    """A generic folder: images of several sizes (RGB, grey, RGBA) and masks."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        mask = _mask(h, w, i)
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        image[mask > 0] = (200, 40, 40)
        if i == 1:
            Image.fromarray(image[:, :, 0]).save(root / "images" / f"im{i}.png")  # grey
        elif i == 2:
            Image.fromarray(np.dstack([image, np.full((h, w), 255, np.uint8)])).save(root / "images" / f"im{i}.png")  # RGBA
        else:
            Image.fromarray(image).save(root / "images" / f"im{i}.jpg")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    return root


@pytest.fixture
def predictions(tmp_path):
    """Blurred masks as maps: PNG for most, one .npy float map."""
    from scipy.ndimage import gaussian_filter

    folder = tmp_path / "preds"
    folder.mkdir()
    for i, (h, w) in enumerate(SIZES):
        pred = np.clip(gaussian_filter(_mask(h, w, i) / 255.0, 1.5), 0, 1)
        if i == 3:
            np.save(folder / f"im{i}.npy", pred.astype(np.float32))
        else:
            Image.fromarray(np.round(pred * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    return folder


def _run(argv, capsys):
    code = main(["evaluate", *argv, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predictions_folder(dataset, predictions, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _run(["--dataset", str(dataset), "--predictions", str(predictions), "--out", str(out)], capsys)
    assert code == 0, err
    for name in ("results.json", "results.md", "pr_curve.png", "f_threshold.png", "worst_best.png", "summary.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert set(METRICS) <= set(results["metrics"])
    assert results["dataset"]["count"] == len(SIZES) and len(results["per_image"]) == len(SIZES)
    assert results["metrics"]["iou"] > 0.8 and results["metrics"]["max_f_beta"] > 0.9
    assert len(results["curves"]["f_beta"]) == 255 and len(results["curves"]["precision"]) == 256
    assert "max F_beta" in (out / "results.md").read_text() and "max_f_beta" in stdout

    # the same numbers as the metrics library on the same arrays
    from saliency.datasets import read_mask
    from saliency.evaluation import read_prediction
    from saliency.metrics import SaliencyMetrics

    direct = SaliencyMetrics()
    for i in range(len(SIZES)):
        path = predictions / (f"im{i}.npy" if i == 3 else f"im{i}.png")
        direct.update(read_prediction(path), read_mask(dataset / "masks" / f"im{i}.png"))
    for key, value in direct.compute()["metrics"].items():
        assert results["metrics"][key] == pytest.approx(value, abs=1e-12), key


def test_worker_processes_give_the_same_numbers(dataset, predictions, tmp_path):
    from saliency.datasets import open_dataset
    from saliency.evaluation import evaluate_prediction_folder

    data = open_dataset(dataset)
    serial = evaluate_prediction_folder(predictions, data, tmp_path / "a", workers=1, progress=False)
    parallel = evaluate_prediction_folder(predictions, data, tmp_path / "b", workers=2, progress=False)
    assert serial["metrics"] == parallel["metrics"]


def test_perfect_maps_score_one(dataset, tmp_path, capsys):
    perfect = tmp_path / "perfect"
    perfect.mkdir()
    for path in (dataset / "masks").iterdir():
        (perfect / path.name).write_bytes(path.read_bytes())
    code, _, err = _run(["--dataset", str(dataset), "--predictions", str(perfect), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "o" / "results.json").read_text())["metrics"]
    assert m["max_f_beta"] == pytest.approx(1) and m["iou"] == 1 and m["mae"] == 0 and m["weighted_f"] == pytest.approx(1)


@pytest.mark.parametrize("baseline", ["all-foreground", "center-prior", "classical"])
def test_baselines(dataset, tmp_path, capsys, baseline):
    out = tmp_path / baseline
    argv = ["--dataset", str(dataset), "--baseline", baseline, "--out", str(out)]
    code, _, err = _run(argv + (["--save-predictions"] if baseline == "classical" else []), capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["source"] == {"kind": "baseline", "baseline": baseline}
    if baseline == "all-foreground":
        fractions = [(_mask(h, w, i) > 0).mean() for i, (h, w) in enumerate(SIZES)]
        assert results["metrics"]["iou"] == pytest.approx(np.mean(fractions))
    if baseline == "classical":
        assert sorted(p.name for p in (out / "predictions").iterdir()) == [f"im{i}.png" for i in range(len(SIZES))]
        # the fixture's objects are saturated red on noise: frequency-tuned saliency finds them
        assert results["metrics"]["max_f_beta"] > 0.5


def test_baseline_maps():
    from saliency.baselines import all_foreground, center_prior, classical_saliency

    image = np.zeros((30, 40, 3), np.uint8)
    image[10:20, 15:25] = 255
    for fn in (all_foreground, center_prior, classical_saliency):
        for variant in (image, image[:, :, 0], np.dstack([image, np.full((30, 40), 255, np.uint8)])):
            out = fn(variant)
            assert out.shape == (30, 40) and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
    prior = center_prior(image)
    assert prior[15, 20] == prior.max() and prior[0, 0] < 0.2
    sal = classical_saliency(image)
    assert sal[15, 20] > 0.9 and sal[2, 2] < 0.2


def test_checkpoint(dataset, tmp_path, capsys):
    from saliency.segmenter import build_segmenter, save_segmenter, segmenter_config

    tiny = dict(encoder="tu-resnet10t", encoder_depth=3, decoder_channels=(16, 8, 4))
    path = tmp_path / "segmenter.pt"
    save_segmenter(build_segmenter(**tiny), segmenter_config(tiny["encoder"], None, 3, tiny["decoder_channels"], 32), path)
    out = tmp_path / "seg"
    code, _, err = _run(["--dataset", str(dataset), "--checkpoint", str(path), "--short-side", "32", "--out", str(out), "--device", "cpu"], capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["short_side"] == 32 and results["source"]["kind"] == "checkpoint"
    assert 0 <= results["metrics"]["iou"] <= 1


@pytest.mark.parametrize("case", ["missing-map", "size", "corrupt", "empty-preds", "empty-dataset", "no-dataset", "offline", "checkpoint", "npy-range", "duplicate"])
def test_bad_input_is_one_line_and_exit_2(dataset, predictions, tmp_path, capsys, case):
    out = tmp_path / "never"
    argv = ["--dataset", str(dataset), "--predictions", str(predictions), "--out", str(out)]
    if case == "missing-map":
        (predictions / "im4.png").unlink()
        match = "have no map with the same file stem"
    elif case == "size":
        Image.new("L", (7, 5)).save(predictions / "im5.png")
        match = "pass --resize-predictions"
    elif case == "corrupt":
        (predictions / "im2.png").write_bytes(b"not an image at all")
        match = "not a readable image"
    elif case == "empty-preds":
        for path in predictions.iterdir():
            path.unlink()
        match = "no saliency maps"
    elif case == "empty-dataset":
        for path in (dataset / "masks").iterdir():
            path.unlink()
        match = "no mask files"
    elif case == "no-dataset":
        argv[1] = str(tmp_path / "missing")
        match = "not a known dataset"
    elif case == "offline":
        argv[1:2] = ["ECSSD", "--root", str(tmp_path / "ecssd"), "--no-download"]
        match = "images.zip"
    elif case == "checkpoint":
        argv[2:4] = ["--checkpoint", str(tmp_path / "nope.pt")]
        match = "file not found"
    elif case == "npy-range":
        np.save(predictions / "im3.npy", np.full(SIZES[3], 4.0, np.float32))
        match = "outside"
    else:
        np.save(predictions / "im0.npy", np.zeros(SIZES[0]))
        match = "share the stem"
    code, _, err = _run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saliency evaluate: error:") and match in lines[0], err
    assert not out.exists()


def test_resize_predictions_flag(dataset, predictions, tmp_path, capsys):
    Image.new("L", (13, 10), 255).save(predictions / "im5.png")
    code, _, err = _run(["--dataset", str(dataset), "--predictions", str(predictions), "--resize-predictions", "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err


def test_one_source_only(dataset, predictions, capsys):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--dataset", str(dataset), "--predictions", str(predictions), "--baseline", "classical"])
    assert info.value.code == 2


def test_worker_processes_after_opencv_threads_ran_here(dataset, tmp_path):
    """Forked metric workers must not hang when this process has used OpenCV's thread pool (the
    classical baseline does, before the first map is handed to a worker)."""
    import threading

    from saliency.baselines import classical_saliency
    from saliency.datasets import open_dataset
    from saliency.evaluation import evaluate_predictor

    classical_saliency(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    outcome = {}

    def evaluate():
        outcome["results"] = evaluate_predictor(classical_saliency, open_dataset(dataset), tmp_path / "w", name="classical", workers=2, progress=False)

    worker = threading.Thread(target=evaluate, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "evaluation with worker processes hung"
    assert outcome["results"]["config"]["workers"] == 2
