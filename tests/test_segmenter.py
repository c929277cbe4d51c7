"""The UNet segmenter: training on synthetic pairs, bit-for-bit resume, inference at any size, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from discovery.errors import UserError

# A tiny UNet (0.4M parameters) so each training step takes milliseconds on one core.
TINY = dict(encoder="tu-resnet10t", encoder_depth=3, decoder_channels=(32, 16, 8))
TINY_FLAGS = ["--encoder", "tu-resnet10t", "--encoder-depth", "3", "--decoder-channels", "32,16,8"]
SIZE = 32


def disc_pair(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A bright noisy disc on a dark noisy background, and its mask."""
    yy, xx = np.mgrid[0:size, 0:size]
    radius = rng.uniform(0.15, 0.3) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    mask = ((xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2).astype(np.uint8)
    background = rng.uniform(0, 70, 3) + rng.normal(0, 12, (size, size, 3))
    colour = rng.uniform(170, 255, 3) + rng.normal(0, 12, (size, size, 3))
    return np.clip(np.where(mask[..., None] > 0, colour, background), 0, 255).astype(np.uint8), mask


def write_png_pairs(folder: Path, n: int, seed: int = 0) -> Path:
    """The PNG layout of `saliency synthesize`: images/{key}.png, masks/{key}.png (0/255), manifest.json."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, mask = disc_pair(rng)
        Image.fromarray(image).save(folder / "images" / f"{i:08d}.png")
        Image.fromarray(mask * 255).save(folder / "masks" / f"{i:08d}.png")
    manifest = {"format": "saliency.pairs/1", "storage": "png", "pairs": n, "resolution": SIZE}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    return write_png_pairs(tmp_path_factory.mktemp("pairs") / "pairs", 48)


def _train(out, data, **overrides):
    from saliency.segmenter_training import train_segmenter

    options = dict(steps=6, batch_size=8, lr=3e-3, image_size=SIZE, val_fraction=0.25, val_every=3, log_every=3,
                   checkpoint_every=3, workers=0, progress=False, **TINY)
    options.update(overrides)
    return train_segmenter(out, data=data, **options)


def _checkpoint_tensors(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = {f"model.{k}": v for k, v in state["model"].items()}
    for i, entry in state["optimizer"]["state"].items():
        tensors.update({f"adam.{i}.{k}": v for k, v in entry.items()})
    return tensors


def test_training_learns_discs(pairs_dir, tmp_path):
    from saliency.segmenter import load_segmenter

    summary = _train(tmp_path / "run", pairs_dir, steps=40, val_every=20, log_every=10, checkpoint_every=20)
    history = summary["val_history"]
    assert [row["step"] for row in history] == [0, 20, 40]
    assert history[-1]["iou"] > history[0]["iou"] + 0.3 and history[-1]["iou"] > 0.7, history
    assert history[-1]["mae"] < history[0]["mae"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    losses = [row["train/loss"] for row in rows if "train/loss" in row]
    assert len(losses) == 4 and losses[-1] < 0.5 * losses[0], losses
    for name in ("segmenter.pt", "checkpoint.pt", "summary.json", "stats.csv", "val_predictions.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert summary["train_pairs"] == 36 and summary["val_pairs"] == 12 and summary["pairs_seen"] == 320
    grid = np.asarray(Image.open(tmp_path / "run" / "val_predictions.png"))
    assert grid.shape[0] == 3 * (3 * SIZE + 2) + 2  # rows: image, mask, prediction; 32-px tiles shown at 96 px

    # the shipped file predicts the held-out discs as well as training measured
    segmenter = load_segmenter(tmp_path / "run" / "segmenter.pt", "cpu")
    image, mask = disc_pair(np.random.default_rng(123))
    prediction = segmenter.predict(image, short_side=SIZE)
    hard, truth = prediction >= 0.5, mask > 0
    assert (hard & truth).sum() / max((hard | truth).sum(), 1) > 0.6


def test_resume_continues_bit_for_bit(pairs_dir, tmp_path):
    source = pairs_dir
    _train(tmp_path / "straight", source, steps=6)
    _train(tmp_path / "resumed", source, steps=3)
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["step"] == 3
    summary = _train(tmp_path / "resumed", source, steps=6, resume=True, workers=2)  # worker count must not matter
    assert summary["step"] == 6
    straight, resumed = (_checkpoint_tensors(tmp_path / name / "checkpoint.pt") for name in ("straight", "resumed"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    val = [[row for row in json.loads((tmp_path / name / "summary.json").read_text())["val_history"]] for name in ("straight", "resumed")]
    assert val[0] == val[1]
    with pytest.raises(UserError, match="already holds a run"):
        _train(tmp_path / "resumed", source, steps=6)
    with pytest.raises(UserError, match="image_size"):
        _train(tmp_path / "resumed", source, steps=9, resume=True, image_size=2 * SIZE)


class DiscSynthesizer:
    """Stands in for saliency.synthesis.PairSynthesizer: discs, about a third rejected by the 'rule'."""

    def sample(self, batch_size, generator):
        seeds = torch.randint(0, 2**31, (batch_size,), generator=generator).tolist()
        pairs = [disc_pair(np.random.default_rng(s)) for s in seeds]
        images = torch.from_numpy(np.stack([p[0] for p in pairs]))
        masks = torch.from_numpy(np.stack([p[1] for p in pairs])).bool()
        keep = torch.rand(batch_size, generator=generator) > 0.3
        return images, masks, keep


def test_on_the_fly_trains_and_resumes(tmp_path):
    from saliency.segmenter_training import train_segmenter

    options = dict(batch_size=4, image_size=SIZE, val_pairs=8, val_every=2, log_every=2, checkpoint_every=2, progress=False, **TINY)
    train_segmenter(tmp_path / "straight", synthesizer=DiscSynthesizer(), steps=4, **options)
    train_segmenter(tmp_path / "resumed", synthesizer=DiscSynthesizer(), steps=2, **options)
    summary = train_segmenter(tmp_path / "resumed", synthesizer=DiscSynthesizer(), steps=4, resume=True, **options)
    assert summary["val_pairs"] == 8 and summary["source"].startswith("on-the-fly")
    straight, resumed = (_checkpoint_tensors(tmp_path / name / "checkpoint.pt") for name in ("straight", "resumed"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_split_by_key_is_deterministic_and_order_free():
    from saliency.training_data import split_by_key

    keys = [f"{i:08d}" for i in range(200)]
    train, val = split_by_key(keys, 0.1, 1000)
    assert len(val) == 20 and not set(train) & set(val) and len(train) + len(val) == 200
    shuffled = list(reversed(keys))
    _, val_shuffled = split_by_key(shuffled, 0.1, 1000)
    assert {keys[i] for i in val} == {shuffled[i] for i in val_shuffled}
    assert len(split_by_key(keys, 0.5, 7)[1]) == 7  # capped
    with pytest.raises(UserError):
        split_by_key(["only"], 0.1, 10)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from saliency.segmenter import build_segmenter, save_segmenter, segmenter_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("segmenter") / "segmenter.pt"
    config = segmenter_config(TINY["encoder"], None, TINY["encoder_depth"], TINY["decoder_channels"], SIZE)
    save_segmenter(build_segmenter(**TINY), config, path)
    return path


def test_predict_any_size_grey_and_rgba(tiny_checkpoint):
    from saliency.segmenter import load_segmenter

    segmenter = load_segmenter(tiny_checkpoint, "cpu")
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    rgba = rng.integers(0, 256, (41, 29, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for image, short_side in ((grey, 128), (rgba, 32), (rgb, None), (grey[:, :, None], 17)):
        prediction = segmenter.predict(image, short_side=short_side)
        assert prediction.shape == image.shape[:2] and prediction.dtype == np.float32
        assert 0 <= prediction.min() and prediction.max() <= 1
    batch = segmenter.predict_batch([grey, rgba, grey, rgb], short_side=32)
    assert [p.shape for p in batch] == [(37, 53), (41, 29), (37, 53), (20, 30)]
    np.testing.assert_allclose(batch[0], segmenter.predict(grey, short_side=32), atol=1e-5)
    # RGBA is composited on black, grey is repeated: same input, same prediction
    opaque = np.dstack([np.repeat(grey[..., None], 3, 2), np.full(grey.shape, 255, np.uint8)])
    np.testing.assert_allclose(segmenter.predict(opaque), segmenter.predict(grey), atol=1e-6)
    # Float images are taken in [0, 1], 16-bit ones scaled: the same photo in any dtype, the same map.
    np.testing.assert_allclose(segmenter.predict(grey.astype(np.float32) / 255), segmenter.predict(grey), atol=1e-6)
    np.testing.assert_allclose(segmenter.predict(grey.astype(np.uint16) * 257), segmenter.predict(grey), atol=1e-6)
    from discovery.errors import UserError

    with pytest.raises(UserError, match="NaN"):
        segmenter.predict(np.full((8, 8), np.nan, np.float32))


def test_prediction_runs_without_the_cudnn_autotuner_and_restores_it(tiny_checkpoint, monkeypatch):
    """Training turns cuDNN's autotuner on; inference on photos of many sizes must not re-tune per shape."""
    from saliency.segmenter import load_segmenter

    segmenter = load_segmenter(tiny_checkpoint, "cpu")
    seen = []
    segmenter.model.register_forward_pre_hook(lambda module, args: seen.append(torch.backends.cudnn.benchmark))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    image = np.zeros((20, 30, 3), np.uint8)
    segmenter.predict(image, short_side=32)
    segmenter.predict_batch([image, image[:10]], short_side=32)
    assert seen == [False, False, False]
    assert torch.backends.cudnn.benchmark is True


def test_load_segmenter_rejects_bad_files(tmp_path, tiny_checkpoint):
    from saliency.segmenter import load_segmenter

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": "saliency.directions/1", "directions": torch.zeros(2, 2)}, wrong)
    mismatched = tmp_path / "mismatched.pt"
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["config"]["decoder_channels"] = [16, 8, 8]
    torch.save(state, mismatched)
    for path in (tmp_path / "missing.pt", corrupt, wrong, mismatched):
        with pytest.raises(UserError) as info:
            load_segmenter(path, "cpu")
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def _run_cli(argv, capsys) -> tuple[int, str]:
    from saliency.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def test_cli_trains_from_a_pairs_folder(pairs_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train-segmenter", "--data", str(pairs_dir), "--out", str(out), *TINY_FLAGS, "--steps", "2", "--batch-size", "4",
            "--image-size", str(SIZE), "--val-fraction", "0.1", "--workers", "0", "--no-progress", "--device", "cpu"]
    code, err = _run_cli(argv, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 2 and summary["config"]["encoder"] == "tu-resnet10t" and summary["val_pairs"] == 5


def test_cli_trains_on_the_fly(tmp_path, capsys):
    from discovery.directions import Directions
    from discovery.generators import create_generator

    truth = create_generator("procedural").factor_directions
    matrix = torch.stack([truth[name] for name in ("x_position", "background_brightness")])
    Directions(matrix=matrix, generator="procedural", method="truth").save(tmp_path / "directions.pt")
    out = tmp_path / "run"
    argv = ["train-segmenter", "--on-the-fly", "--directions", str(tmp_path / "directions.pt"), "--index", "1", "--sign", "1",
            "--rule", "intensity", "--threshold", "0.85", "--out", str(out), *TINY_FLAGS, "--steps", "2", "--batch-size", "4",
            "--image-size", str(SIZE), "--val-pairs", "4", "--no-progress", "--device", "cpu"]
    code, err = _run_cli(argv, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"].startswith("on-the-fly") and "index=1" in summary["source"] and summary["val_pairs"] == 4


@pytest.mark.parametrize("case", ["missing", "empty", "no-source", "both-sources", "fly-no-directions", "bad-encoder", "bad-size",
                                  "imagenet-offline", "corrupt-resume"])
def test_cli_bad_input_is_one_line_and_writes_nothing(case, pairs_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    data = str(pairs_dir)
    extra: list[str] = []
    if case == "missing":
        data = str(tmp_path / "nowhere")
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        data = str(tmp_path / "empty")
    elif case == "bad-encoder":
        extra = ["--encoder", "no-such-encoder"]
    elif case == "bad-size":
        extra = ["--image-size", "36"]
    elif case == "imagenet-offline":
        import saliency.segmenter

        monkeypatch.setattr(saliency.segmenter, "_hub_reachable", lambda *a, **k: False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-empty"))
        extra = ["--encoder", "resnet18", "--encoder-weights", "imagenet"]
    elif case == "corrupt-resume":
        out.mkdir()
        (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
        extra = ["--resume"]
    argv = ["train-segmenter", "--out", str(out), "--steps", "2", "--batch-size", "4", "--image-size", str(SIZE), "--workers", "0",
            "--no-progress", "--device", "cpu"]
    argv += [] if case in ("no-source", "fly-no-directions") else ["--data", data]
    argv += ["--on-the-fly"] if case in ("both-sources", "fly-no-directions") else []
    argv += TINY_FLAGS + extra if case not in ("bad-encoder", "imagenet-offline") else extra
    code, err = _run_cli(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saliency train-segmenter: error:"), err
    if case == "corrupt-resume":
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]
    else:
        assert not out.exists()
    if case == "imagenet-offline":
        assert "internet" in lines[0]
