"""saliency.datasets: tiny fixtures in each official layout, any image/mask folder, split lists,
downloads (simulated; tests never reach the network) and one-line errors."""

import io
import json
import zipfile

import numpy as np
from pathlib import Path

import pytest
from PIL import Image

from discovery.errors import UserError
from saliency import datasets as D


def _image(path, size=(12, 9), mode="RGB", value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode != "RGB" else (value, 50, 200)).save(path)


def _mask(path, size=(12, 9)):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros(size[::-1], np.uint8)
    array[2:6, 3:8] = 255
    Image.fromarray(array).save(path)


def write_layout(root, images, image_ext, masks, mask_ext, stems):
    for stem in stems:
        _image(root / images / f"{stem}{image_ext}")
        _mask(root / masks / f"{stem}{mask_ext}")
    return root


def test_manifests_describe_the_official_sets():
    expected = {"ECSSD": 1000, "DUTS-TE": 5019, "DUT-OMRON": 5168, "SOD": 300, "weizmann-horse": 328}
    assert set(D.list_datasets()) == set(expected)
    for name, count in expected.items():
        manifest = D.load_manifest(name)
        assert manifest["name"] == name and manifest["count"] == count
        assert manifest["layouts"] and all({"images", "image_ext", "masks", "mask_ext"} <= set(layout) for layout in manifest["layouts"])
        for item in manifest["downloads"]:
            assert item["url"].startswith("http") and "sha256" in item
    assert D.load_manifest("ecssd")["layouts"][0] == {"images": "images", "image_ext": ".jpg", "masks": "ground_truth_mask", "mask_ext": ".png"}
    assert D.load_manifest("DUTS-TE")["layouts"][0]["masks"] == "DUTS-TE-Mask"
    assert D.load_manifest("DUT-OMRON")["layouts"][0]["masks"] == "pixelwiseGT-new-PNG"


@pytest.mark.parametrize(
    "name, images, image_ext, masks, mask_ext",
    [
        ("ECSSD", "images", ".jpg", "ground_truth_mask", ".png"),
        ("DUTS-TE", "DUTS-TE/DUTS-TE-Image", ".jpg", "DUTS-TE/DUTS-TE-Mask", ".png"),  # as the archive unzips
        ("DUT-OMRON", "DUT-OMRON-image/DUT-OMRON-image", ".jpg", "pixelwiseGT-new-PNG", ".png"),  # doubly nested copy
        ("SOD", "Imgs", ".jpg", "GT", ".png"),
    ],
)
def test_official_layouts(tmp_path, caplog, name, images, image_ext, masks, mask_ext):
    root = write_layout(tmp_path / name, images, image_ext, masks, mask_ext, ["0002", "0001", "0003"])
    (root / "__MACOSX").mkdir()
    dataset = D.open_dataset(name, root)
    assert dataset.name == name and dataset.stems == ["0001", "0002", "0003"]
    sample = dataset[0]
    assert sample.image_path.name == f"0001{image_ext}" and sample.mask_path.name == f"0001{mask_ext}"
    assert D.read_rgb(sample.image_path).shape == (9, 12, 3)
    assert D.read_mask(sample.mask_path).sum() == 20
    assert dataset.describe()["complete"] is False
    assert "the official set has" in caplog.text  # a warning of the saliency logger


def test_weizmann_horse_splits(tmp_path):
    root = write_layout(tmp_path / "horses", "images", ".jpg", "masks", ".png", ["horse001", "horse002", "horse003", "horse004"])
    (root / "test.txt").write_text("horse003\nhorse001\n")
    (root / "train.txt").write_text("horse002.jpg\nhorse004.jpg\n")
    assert D.open_dataset("weizmann-horse", root).stems == ["horse001", "horse003"]  # test by default
    assert D.open_dataset("weizmann-horse", root, split="train").stems == ["horse002", "horse004"]
    assert len(D.open_dataset("weizmann-horse", root, split="all")) == 4
    with pytest.raises(UserError, match="splits"):
        D.open_dataset("weizmann-horse", root, split="validation")
    with pytest.raises(UserError, match="names of split 'val' are not in the dataset"):  # the shipped list, on a toy copy
        D.open_dataset("weizmann-horse", root, split="val")
    (root / "test.txt").write_text("horse003\nhorse999\n")
    with pytest.raises(UserError, match="horse999"):
        D.open_dataset("weizmann-horse", root)


HORSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "weizmann-horse"


def test_the_shipped_validation_split_is_carved_from_train():
    val = D.open_dataset("weizmann-horse", HORSES, split="val").stems
    unlabelled = D.open_dataset("weizmann-horse", HORSES, split="train-unlabelled").stems
    train = D.open_dataset("weizmann-horse", HORSES, split="train").stems
    test = D.open_dataset("weizmann-horse", HORSES, split="test").stems
    assert len(val) == 30 and len(unlabelled) == 198 and sorted(val + unlabelled) == sorted(train)
    assert not set(val) & set(test)


def test_any_folder_with_image_and_mask_subfolders(tmp_path):
    root = write_layout(tmp_path / "mine", "Images", ".png", "gt", ".bmp", ["a", "b"])
    dataset = D.open_dataset(root)
    assert dataset.stems == ["a", "b"] and dataset.layout == {"images": "Images", "masks": "gt"}
    (root / "val.txt").write_text("b\n")
    assert D.open_dataset(str(root), split="val").stems == ["b"]
    with pytest.raises(UserError, match="not found"):
        D.open_dataset(root, split="train")
    with pytest.raises(UserError, match="--root applies"):
        D.open_dataset(root, root=tmp_path)


@pytest.mark.parametrize("case", ["mismatch", "extra-image", "duplicate", "empty", "no-subfolders", "unknown"])
def test_folder_errors(tmp_path, case):
    root = write_layout(tmp_path / "set", "images", ".jpg", "masks", ".png", ["a", "b"])
    if case == "mismatch":
        (root / "masks" / "b.png").rename(root / "masks" / "c.png")
        match = "no image .* same stem"
    elif case == "extra-image":
        _image(root / "images" / "z.jpg")
        match = "no mask"
    elif case == "duplicate":
        _mask(root / "masks" / "a.bmp")
        match = "share the stem 'a'"
    elif case == "empty":
        for path in (root / "masks").iterdir():
            path.unlink()
        match = "no mask files"
    elif case == "no-subfolders":
        root = tmp_path / "flat"
        root.mkdir()
        match = "expected an image sub-folder"
    else:
        root = tmp_path / "nothing-here"
        match = "not a known dataset"
    with pytest.raises(UserError, match=match) as info:
        D.open_dataset(str(root))
    assert "\n" not in str(info.value)


def test_offline_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    import discovery.weights

    def offline(url, destination, sha256=None, timeout=30.0):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(discovery.weights, "download", offline)
    with pytest.raises(UserError) as info:
        D.open_dataset("ECSSD", tmp_path / "ECSSD")
    message = str(info.value)
    assert "images.zip" in message and str(tmp_path / "ECSSD") in message and "network unreachable" in message
    assert not (tmp_path / "ECSSD").exists()  # no empty folder left behind

    def forbidden(*args, **kwargs):
        raise AssertionError("download attempted with download=False")

    monkeypatch.setattr(discovery.weights, "download", forbidden)
    with pytest.raises(UserError, match="DUTS-TE.zip"):
        D.open_dataset("DUTS-TE", tmp_path / "DUTS", download=False)
    with pytest.raises(UserError, match="GT/\\*.png"):  # SOD: no automatic download, only instructions
        D.open_dataset("SOD", tmp_path / "SOD")


def _zip(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def _png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_download_unpacks_the_official_archives(tmp_path, monkeypatch):
    import discovery.weights

    image = np.full((9, 12, 3), 120, np.uint8)
    mask = np.zeros((9, 12), np.uint8)
    mask[3:, :4] = 255
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG")
    archives = {
        "images.zip": _zip({"images/0001.jpg": buffer.getvalue(), "images/0002.jpg": buffer.getvalue()}),
        "ground_truth_mask.zip": _zip({"ground_truth_mask/0001.png": _png_bytes(mask), "ground_truth_mask/0002.png": _png_bytes(mask)}),
    }
    fetched = []

    def fake_download(url, destination, sha256=None, timeout=30.0):
        fetched.append(url)
        destination.write_bytes(archives[destination.name])
        return destination

    monkeypatch.setattr(discovery.weights, "download", fake_download)
    dataset = D.open_dataset("ECSSD", tmp_path / "ECSSD")
    assert dataset.stems == ["0001", "0002"] and len(fetched) == 2
    record = json.loads((tmp_path / "ECSSD" / "download.json").read_text())
    assert [a["file"] for a in record["archives"]] == ["images.zip", "ground_truth_mask.zip"]
    assert all(len(a["sha256"]) == 64 for a in record["archives"])
    D.open_dataset("ECSSD", tmp_path / "ECSSD")  # found on disk now: no second download
    assert len(fetched) == 2
    # An archive that changed since its first download is not unpacked again.
    import shutil

    shutil.rmtree(tmp_path / "ECSSD" / "images")
    (tmp_path / "ECSSD" / "images.zip").write_bytes(_zip({"images/0001.jpg": buffer.getvalue()}))
    with pytest.raises(UserError, match="recorded at its first download"):
        D.open_dataset("ECSSD", tmp_path / "ECSSD")
    assert not (tmp_path / "ECSSD" / "images").exists()


def test_masks_of_any_format_binarised_at_128(tmp_path):
    grey = np.array([[0, 127], [128, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert D.read_mask(tmp_path / "grey.png").tolist() == [[False, False], [True, True]]
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[0, :, 3] = 255  # white where opaque, transparent elsewhere
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert D.read_mask(tmp_path / "alpha.png").tolist() == [[True, True], [False, False]]
    Image.fromarray((grey.astype(np.uint16) * 257)).save(tmp_path / "deep.png")
    assert D.read_mask(tmp_path / "deep.png").tolist() == [[False, False], [True, True]]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="not a readable image"):
        D.read_mask(tmp_path / "broken.png")
