"""`saliency predict`, refinement and export on the real horse photos and on crafted bad files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import saliency
from discovery.errors import UserError
from saliency.cli import main
from saliency.segmenter import build_segmenter, load_segmenter, save_segmenter, segmenter_config

HORSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "weizmann-horse"
TINY = {"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": (32, 16, 8)}
SIZE = 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny UNet in the real segmenter.pt format (random weights, trained at 32 px)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("segmenter") / "segmenter.pt"
    model = build_segmenter(**TINY)
    with torch.no_grad():  # a map with structure: the first input channel drives the logit
        model.segmentation_head[0].bias.fill_(0.0)
    save_segmenter(model, segmenter_config(TINY["encoder"], None, TINY["encoder_depth"], TINY["decoder_channels"], SIZE), path)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("horse001.jpg", "horse002.jpg", "horse003.jpg"):
        shutil.copy(HORSES / "images" / name, folder / name)
    return folder


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _png(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image


def test_every_output_type_at_the_photos_size(checkpoint, photos, tmp_path, capsys):
    seg = load_segmenter(checkpoint, "cpu")
    reference = seg.predict(photos / "horse002.jpg")
    threshold = float(np.median(reference))  # a mask with both values whatever the random weights
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, "predict", photos, "--checkpoint", checkpoint, "--out", out, "--type", "all",
                             "--threshold", threshold, "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert "wrote 3 photos" in stdout
    for stem in ("horse001", "horse002", "horse003"):
        size = Image.open(photos / f"{stem}.jpg").size
        kinds = {kind: _png(out / f"{stem}_{kind}.png") for kind in ("map", "mask", "rgba", "overlay")}
        assert {kind: (image.size, image.mode) for kind, image in kinds.items()} == {
            "map": (size, "L"), "mask": (size, "L"), "rgba": (size, "RGBA"), "overlay": (size, "RGB")}
        mask = np.asarray(kinds["mask"])
        assert set(np.unique(mask)) <= {0, 255}
        rgba = np.asarray(kinds["rgba"])
        assert np.array_equal(rgba[..., 3], mask)  # alpha is the mask
        photo = np.asarray(Image.open(photos / f"{stem}.jpg").convert("RGB"))
        assert np.array_equal(rgba[mask > 0, :3], photo[mask > 0]) and not rgba[mask == 0, :3].any()  # transparent: no colour
    mask = np.asarray(_png(out / "horse002_mask.png")) > 0
    assert 0.2 < mask.mean() < 0.8 and np.array_equal(mask, reference >= threshold)
    assert np.abs(np.asarray(_png(out / "horse002_map.png")) / 255.0 - reference).max() <= 0.5 / 255 + 1e-6
    record = json.loads((out / "predictions.json").read_text())
    assert record["summary"]["written"] == 3 and record["failures"] == [] and record["settings"]["short_side"] == SIZE
    assert {entry["input"] for entry in record["inputs"]} == {str(photos / f"horse00{i}.jpg") for i in (1, 2, 3)}
    # --soft-alpha: the soft map is the alpha; default types are rgba and mask; folders keep their sub-folders.
    (photos / "more").mkdir()
    shutil.copy(HORSES / "images" / "horse004.jpg", photos / "more" / "horse004.jpg")
    code, _, err = _cli(capsys, "predict", photos, "--checkpoint", checkpoint, "--out", tmp_path / "soft", "--soft-alpha", "--recursive",
                        "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "soft").rglob("*.png")) == sorted(
        f"horse00{i}_{kind}.png" for i in (1, 2, 3, 4) for kind in ("mask", "rgba"))
    assert (tmp_path / "soft" / "more" / "horse004_rgba.png").is_file()
    alpha = np.asarray(_png(tmp_path / "soft" / "horse002_rgba.png"))[..., 3]
    assert np.array_equal(alpha, np.asarray(_png(out / "horse002_map.png")))


def test_exif_rotation_grey_rgba_palette_and_16_bit_inputs(checkpoint, tmp_path, capsys):
    seg = load_segmenter(checkpoint, "cpu")
    photo = Image.open(HORSES / "images" / "horse005.jpg").convert("RGB")
    folder = tmp_path / "kinds"
    folder.mkdir()
    # EXIF orientation 6: the stored pixels are the upright photo turned 90 degrees counter-clockwise.
    stored = photo.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(folder / "rotated.jpg", exif=exif.tobytes(), quality=95)
    upright = np.asarray(Image.open(folder / "rotated.jpg").transpose(Image.Transpose.ROTATE_270))
    grey = np.asarray(photo.convert("L"))
    Image.fromarray(grey).save(folder / "grey.png")
    Image.fromarray((grey.astype(np.uint16) * 257)).save(folder / "grey16.png")  # 16-bit PNG
    rgba = np.dstack([np.asarray(photo), np.full(grey.shape, 255, np.uint8)])
    Image.fromarray(rgba).save(folder / "rgba.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    photo.save(folder / "webp.webp", lossless=True)
    photo.save(folder / "tiff.tiff")
    photo.save(folder / "bmp.bmp")
    code, _, err = _cli(capsys, "predict", folder, "--checkpoint", checkpoint, "--out", tmp_path / "out", "--type", "map",
                        "--device", "cpu", "--no-progress")
    assert code == 0, err
    maps = {p.name[: -len("_map.png")]: np.asarray(_png(p)) for p in (tmp_path / "out").glob("*_map.png")}
    assert set(maps) == {"rotated", "grey", "grey16", "rgba", "palette", "webp", "tiff", "bmp"}
    assert maps["rotated"].shape == grey.shape  # upright: the photo's own orientation
    expected = np.round(seg.predict(upright) * 255)
    assert np.abs(maps["rotated"].astype(int) - expected).max() <= 1
    assert np.abs(maps["grey16"].astype(int) - maps["grey"].astype(int)).max() <= 1  # 16 bits scaled, not saturated
    assert np.abs(maps["rgba"].astype(int) - np.round(seg.predict(np.asarray(photo)) * 255)).max() <= 1
    for lossless in ("webp", "tiff", "bmp"):
        assert np.array_equal(maps[lossless], maps["rgba"])
    assert np.abs(maps["palette"].astype(int) - maps["rgba"].astype(int)).mean() < 8  # 256 colours, close to the photo
    # The Python API takes paths, PIL images and arrays alike.
    assert np.array_equal(seg.predict(folder / "grey.png"), seg.predict(Image.open(folder / "grey.png")))
    assert np.array_equal(seg.predict(grey), seg.predict(folder / "grey.png"))


def test_unreadable_files_are_named_and_skipped(checkpoint, photos, tmp_path, capsys):
    data = (photos / "horse001.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (photos / "notes.png").write_text("this is not an image\n")
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "predict", photos, "--checkpoint", checkpoint, "--out", out, "--device", "cpu", "--no-progress")
    assert code == 2
    lines = err.strip().splitlines()
    assert any("truncated.jpg" in line for line in lines[:-1]) and any("notes.png" in line for line in lines[:-1])
    assert lines[-1].startswith("saliency predict: error: 2 of 5 inputs could not be read") and "Traceback" not in err
    for stem in ("horse001", "horse002", "horse003"):
        assert (out / f"{stem}_rgba.png").is_file() and (out / f"{stem}_mask.png").is_file()
    assert not list(out.glob("truncated_*")) and not list(out.glob("notes_*")) and not list(out.glob(".*"))
    record = json.loads((out / "predictions.json").read_text())
    assert sorted(Path(f["input"]).name for f in record["failures"]) == ["notes.png", "truncated.jpg"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--type", "rgba,alpha"], "--type rgba,alpha"),
        (["--threshold", "2"], "--threshold 2"),
        (["--checkpoint-missing"], "file not found"),
        (["--out-under-a-file"], "cannot write there"),
        (["--input-missing"], "no such file or folder"),
    ],
)
def test_bad_options_are_one_line_before_any_work(checkpoint, photos, tmp_path, capsys, argv, message):
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / ("a-file/out" if argv == ["--out-under-a-file"] else "out")
    ckpt = tmp_path / "missing.pt" if argv == ["--checkpoint-missing"] else checkpoint
    inputs = tmp_path / "nothing-*.jpg" if argv == ["--input-missing"] else photos
    extra = [] if argv[0].startswith("--checkpoint-") or argv[0].startswith("--out-") or argv[0].startswith("--input-") else argv
    code, _, err = _cli(capsys, "predict", inputs, "--checkpoint", ckpt, "--out", out, *extra, "--device", "cpu", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists() or argv == ["--checkpoint-missing"] and not list((tmp_path / "out").glob("*.png"))


def test_skip_existing_continues_a_killed_run(checkpoint, tmp_path, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(1, 41):
        shutil.copy(HORSES / "images" / f"horse{i:03d}.jpg", folder / f"horse{i:03d}.jpg")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "saliency", "predict", str(folder), "--checkpoint", str(checkpoint), "--out",
                                str(out), "--batch-size", "1", "--workers", "1", "--type", "all", "--device", "cpu", "--no-progress"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*_overlay.png"))) < 3 and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 0 < len(finished) < 160, len(finished)  # killed in the middle
    code, _, err = _cli(capsys, "predict", folder, "--checkpoint", checkpoint, "--out", out, "--type", "all", "--skip-existing",
                        "--batch-size", "1", "--device", "cpu", "--no-progress")
    assert code == 0, err
    photos_done = {p.name.rsplit("_", 1)[0] for p in finished if all((out / f"{p.name.rsplit('_', 1)[0]}_{k}.png") in finished
                                                                     for k in ("map", "mask", "rgba", "overlay"))}
    for path, mtime in finished.items():
        if path.name.rsplit("_", 1)[0] in photos_done:
            assert path.stat().st_mtime_ns == mtime, path  # finished photos were not redone
    assert len(list(out.glob("*.png"))) == 160 and not list(out.glob(".*.tmp"))
    record = json.loads((out / "predictions.json").read_text())
    assert record["summary"]["skipped"] == len(photos_done) and record["summary"]["written"] == 40 - len(photos_done)
    # The continued folder equals an uninterrupted run.
    saliency.predict(folder, checkpoint=checkpoint, out=tmp_path / "whole", types="all", batch_size=1, device="cpu", progress=False)
    for path in out.glob("*.png"):
        assert np.array_equal(np.asarray(_png(path)), np.asarray(_png(tmp_path / "whole" / path.name))), path.name


def test_predict_and_evaluate_give_the_same_maps(checkpoint, tmp_path, capsys):
    data = tmp_path / "set"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in (1, 2, 3, 4):
        shutil.copy(HORSES / "images" / f"horse{i:03d}.jpg", data / "images")
        shutil.copy(HORSES / "masks" / f"horse{i:03d}.png", data / "masks")
    for refine, tta in (("none", "none"), ("components", "none"), ("none", "flip")):
        run = f"{refine}-{tta}"
        code, _, err = _cli(capsys, "evaluate", "--dataset", data, "--checkpoint", checkpoint, "--short-side", "48", "--save-predictions",
                            "--refine", refine, "--tta", tta, "--out", tmp_path / f"eval-{run}", "--workers", "1", "--no-progress",
                            "--device", "cpu")
        assert code == 0, err
        code, _, err = _cli(capsys, "predict", data / "images", "--checkpoint", checkpoint, "--short-side", "48", "--type", "map",
                            "--refine", refine, "--tta", tta, "--out", tmp_path / f"pred-{run}", "--device", "cpu", "--no-progress")
        assert code == 0, err
        for i in (1, 2, 3, 4):
            evaluated = np.asarray(_png(tmp_path / f"eval-{run}" / "predictions" / f"horse{i:03d}.png"))
            predicted = np.asarray(_png(tmp_path / f"pred-{run}" / f"horse{i:03d}_map.png"))
            # predict batches same-sized photos, evaluate does not: float sums may round one grey level apart
            assert np.abs(evaluated.astype(int) - predicted).max() <= 1, (run, i)
    results = json.loads((tmp_path / "eval-components-none" / "results.json").read_text())
    assert results["source"]["refine"] == "components"
    assert json.loads((tmp_path / "eval-none-flip" / "results.json").read_text())["source"]["tta"] == "flip"
    assert json.loads((tmp_path / "pred-none-flip" / "predictions.json").read_text())["settings"]["tta"] == "flip"
    flipped = np.asarray(_png(tmp_path / "pred-none-flip" / "horse001_map.png"))
    assert not np.array_equal(flipped, np.asarray(_png(tmp_path / "pred-none-none" / "horse001_map.png")))


def test_flip_tta_is_the_logit_average_with_the_mirror_image(checkpoint, tmp_path):
    rgb = np.asarray(Image.open(HORSES / "images" / "horse001.jpg").convert("RGB").resize((64, 48)))  # a multiple of 8: no padding
    plain, flip = load_segmenter(checkpoint, "cpu"), load_segmenter(checkpoint, "cpu", tta="flip")
    direct, mirrored = plain.predict(rgb, short_side=None), plain.predict(rgb[:, ::-1], short_side=None)[:, ::-1]
    assert np.abs(direct - mirrored).max() > 1e-3  # the net alone is not mirror-symmetric ...
    averaged = flip.predict(rgb, short_side=None)
    assert np.allclose(flip.predict(rgb[:, ::-1], short_side=None)[:, ::-1], averaged, atol=1e-5)  # ... its flip average is

    def logit(p):
        return np.log(p.astype(np.float64) / (1 - p))

    assert np.allclose(averaged, 1 / (1 + np.exp(-(logit(direct) + logit(mirrored)) / 2)), atol=1e-4)
    with pytest.raises(UserError, match="--tta rotate"):
        load_segmenter(checkpoint, "cpu", tta="rotate")
    # A loaded segmenter handed to predict keeps its own setting; predict's --tta applies to a copy.
    record = saliency.predict([HORSES / "images" / "horse001.jpg"], checkpoint=plain, out=tmp_path / "out",
                              types="map", tta="flip", short_side=None, progress=False)
    assert plain.tta == "none" and record["settings"]["tta"] == "flip"


# ----------------------------------------------------------------------------- refinement
def _step_scene(noise=0.25, seed=0):
    """A photo with a bright square on a dark ground, and a noisy, blurred map of that square."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    truth = np.zeros((48, 64), bool)
    truth[12:36, 16:44] = True
    image = np.where(truth[..., None], 220, 30).astype(np.uint8).repeat(3, axis=2)
    prob = np.clip(gaussian_filter(truth.astype(float), 4) + rng.normal(0, noise, truth.shape), 0, 1).astype(np.float32)
    return image, prob, truth


@pytest.mark.parametrize("method", ["bilateral", "crf"])
def test_edge_aware_refiners_snap_the_map_to_the_photos_edges(method):
    from saliency.refine import refine

    image, prob, truth = _step_scene()
    refined = refine(prob, image, method)
    assert refined.shape == prob.shape and refined.dtype == np.float32 and 0 <= refined.min() and refined.max() <= 1

    def iou(p):
        return ((p >= 0.5) & truth).sum() / ((p >= 0.5) | truth).sum()

    assert iou(refined) > max(0.97, iou(prob) + 0.05), (iou(prob), iou(refined))
    # The noise goes (the solver keeps each region's mean, so the spread inside a region is what shrinks).
    assert refined[truth].std() < 0.5 * prob[truth].std() and refined[~truth].std() < 0.5 * prob[~truth].std()


def test_a_refiner_without_its_package_stops_before_any_work(checkpoint, photos, tmp_path, monkeypatch, capsys):
    from saliency.pipeline import load_config, validate_config

    config = load_config(Path(saliency.__file__).parent / "configs" / "demo.yaml")
    config["evaluate"]["refine"] = "crf"
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # as if pydensecrf2 were not installed
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    code, _, err = _cli(capsys, "predict", photos, "--checkpoint", checkpoint, "--out", tmp_path / "out", "--refine", "crf",
                        "--device", "cpu", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "pip install 'saliency[crf]'" in err, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="pydensecrf2"):
        validate_config(config)


def test_components_keeps_the_largest_object_and_fills_its_holes():
    from saliency.refine import refine

    prob = np.zeros((40, 40), np.float32)
    prob[5:30, 5:30] = 0.9
    prob[12:16, 12:16] = 0.1  # a hole
    prob[34:38, 34:38] = 0.8  # a speck
    refined = refine(prob, np.zeros((40, 40, 3), np.uint8), "components")
    assert (refined[12:16, 12:16] >= 0.5).all() and (refined[34:38, 34:38] == 0).all()
    assert np.array_equal(refined[5:12, 5:30], prob[5:12, 5:30])  # values kept where nothing changed
    with pytest.raises(UserError, match="unknown refinement"):
        refine(prob, np.zeros((40, 40, 3), np.uint8), "median")


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_runs_without_the_package_and_matches_pytorch(checkpoint, tmp_path, capsys, fmt):
    out = tmp_path / f"segmenter.{fmt}"
    code, stdout, err = _cli(capsys, "export", "--checkpoint", checkpoint, "--format", fmt, "--out", out)
    assert code == 0, err
    sidecar = json.loads((tmp_path / f"segmenter.{fmt}.json").read_text())
    assert sidecar["input"]["size_multiple"] == 8 and sidecar["input"]["range"] == [0, 1]
    seg = load_segmenter(checkpoint, "cpu")
    for name in ("horse001.jpg", "horse010.jpg"):  # real photos, padded to multiples of 8, two at once for the batch axis
        photo = np.asarray(Image.open(HORSES / "images" / name).convert("RGB").resize((96, 64)))
        images = torch.from_numpy(np.stack([photo, photo[::-1].copy()])).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            from saliency.segmenter import normalize

            expected = torch.sigmoid(seg.model(normalize(torch.from_numpy(np.stack([photo, photo[::-1].copy()])), seg.mean, seg.std)))
        if fmt == "onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            got = session.run(["saliency"], {"images": images.numpy()})[0]
        else:
            got = torch.jit.load(str(out))(images).numpy()
        assert got.shape == (2, 1, 64, 96)
        assert np.abs(got - expected.numpy()).max() < 1e-4
    code, _, err = _cli(capsys, "export", "--checkpoint", tmp_path / "nope.pt", "--format", fmt, "--out", tmp_path / "x.onnx")
    assert code == 2 and "file not found" in err and not (tmp_path / "x.onnx").exists()
