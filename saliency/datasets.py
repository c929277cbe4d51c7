"""Salient-object benchmarks and any image/mask folder, as sequences of (stem, image path, mask path).

Known datasets (ECSSD, DUTS-TE, DUT-OMRON, SOD, weizmann-horse) are described by JSON manifests in
``data/manifests/<name>.json`` at the repository root: official URLs, archive checksums where known,
folder layouts, counts and split lists. ``open_dataset`` reads a known dataset from ``--root`` (default
``data/<name>``), downloads it from the official site when it is missing and the machine is online, and
otherwise says where to put the files. Any other folder works when it holds an image sub-folder and a
mask sub-folder whose files match by stem (``images/horse001.jpg`` <-> ``masks/horse001.png``).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from discovery.errors import UserError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_EXTS = (".png", ".bmp", ".gif", ".tif", ".tiff", ".jpg", ".jpeg")
# Generic folders: sub-folder names (lower case) that hold images and masks.
IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "im", "jpegimages", "rgb", "inputs", "input")
MASK_DIR_NAMES = ("masks", "mask", "gt", "gts", "ground_truth", "ground_truth_mask", "groundtruth", "labels", "annotations", "segmentations", "targets")


def repository_root() -> Path:
    import saliency

    return Path(saliency.__file__).resolve().parents[1]


def manifests_dir() -> Path:
    return repository_root() / "data" / "manifests"


def default_data_dir() -> Path:
    """``$SALIENCY_DATA`` when set, else ``data/`` at the repository root."""
    if os.environ.get("SALIENCY_DATA"):
        return Path(os.environ["SALIENCY_DATA"]).expanduser()
    return repository_root() / "data"


def list_datasets() -> list[str]:
    return sorted(p.stem for p in manifests_dir().glob("*.json"))


def _canonical_name(name: str) -> str | None:
    for known in list_datasets():
        if known.lower() == name.lower():
            return known
    return None


def load_manifest(name: str) -> dict:
    canonical = _canonical_name(name)
    if canonical is None:
        raise UserError(f"{name!r}: not a known dataset ({', '.join(list_datasets())}) and not a folder")
    with open(manifests_dir() / f"{canonical}.json", encoding="utf-8") as handle:
        return json.load(handle)


@dataclass(frozen=True)
class Sample:
    stem: str
    image_path: Path
    mask_path: Path


class SODDataset(Sequence[Sample]):
    """An ordered list of samples (sorted by stem) with where they came from."""

    def __init__(self, name: str, root: Path, samples: list[Sample], *, split: str | None = None, manifest: dict | None = None, layout: dict | None = None):
        self.name = name
        self.root = Path(root)
        self.samples = samples
        self.split = split
        self.manifest = manifest
        self.layout = layout or {}
        self._by_stem = {s.stem: s for s in samples}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def stems(self) -> list[str]:
        return [s.stem for s in self.samples]

    def by_stem(self, stem: str) -> Sample:
        return self._by_stem[stem]

    @property
    def expected_count(self) -> int | None:
        if not self.manifest:
            return None
        if self.split and self.manifest.get("split_counts"):
            return self.manifest["split_counts"].get(self.split)
        return self.manifest.get("count")

    def describe(self) -> dict:
        expected = self.expected_count
        return {
            "name": self.name,
            "root": str(self.root),
            "split": self.split,
            "count": len(self),
            "expected_count": expected,
            "complete": expected is None or len(self) == expected,
            "layout": self.layout,
        }

    def __repr__(self) -> str:
        return f"SODDataset({self.name!r}, root={str(self.root)!r}, split={self.split!r}, n={len(self)})"


# --------------------------------------------------------------------------------------------------
# Reading


def read_rgb(path: str | Path) -> np.ndarray:
    """Any image as uint8 HxWx3 (grey expanded, alpha composited on black)."""
    from discovery.images import read_image

    image = read_image(path, mode="RGB")
    return image if image.flags.writeable else image.copy()  # torch.from_numpy warns on read-only arrays


def read_grey(path: str | Path) -> np.ndarray:
    """Any single-channel view of an image file as a 2-D array: uint8, or float in [0, 1] for 16-bit
    and float files. Colour files are converted to luma; alpha is composited on black."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                return np.clip(array / 65535.0, 0.0, 1.0)
            if image.mode == "F":
                return np.asarray(image, dtype=np.float64)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (0, 0, 0, 255))
                image = Image.alpha_composite(background, image)
            if image.mode != "L":
                image = image.convert("L")
            return np.asarray(image)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from None


def read_mask(path: str | Path) -> np.ndarray:
    """A ground-truth mask as bool HxW: object where the grey value is >= 128."""
    grey = read_grey(path)
    if grey.dtype != np.uint8:
        return grey >= 128 / 255
    return grey >= 128


# --------------------------------------------------------------------------------------------------
# Folder scanning


def _files_by_stem(folder: Path, exts: Sequence[str], what: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in exts:
            continue
        if path.stem in found:
            raise UserError(f"{folder}: two {what} files share the stem {path.stem!r} ({found[path.stem].name}, {path.name})")
        found[path.stem] = path
    return found


def _find_subfolder(root: Path, name: str, exts: Sequence[str], depth: int = 2) -> Path | None:
    """The first folder called ``name`` at most ``depth`` levels below ``root`` that holds a file with
    one of ``exts`` (official archives nest their folders differently from copy to copy)."""
    level = [root]
    for _ in range(depth + 1):
        following = []
        for folder in level:
            candidate = folder / name
            if candidate.is_dir() and any(p.suffix.lower() in exts for p in candidate.iterdir()):
                return candidate
            try:
                following.extend(p for p in sorted(folder.iterdir()) if p.is_dir() and p.name != "__MACOSX" and not p.name.startswith("."))
            except OSError:
                pass
        level = following
    return None


def _pair(image_dir: Path, mask_dir: Path, image_exts, mask_exts, source: str) -> list[Sample]:
    masks = _files_by_stem(mask_dir, mask_exts, "mask")
    if not masks:
        raise UserError(f"{mask_dir}: no mask files ({', '.join(mask_exts)})")
    images = _files_by_stem(image_dir, image_exts, "image")
    if not images:
        raise UserError(f"{image_dir}: no image files ({', '.join(image_exts)})")
    missing = sorted(set(masks) - set(images))
    extra = sorted(set(images) - set(masks))
    if missing:
        raise UserError(f"{source}: {len(missing)} of {len(masks)} masks in {mask_dir} have no image in {image_dir} with the same stem (e.g. {missing[0]!r})")
    if extra:
        raise UserError(f"{source}: {len(extra)} of {len(images)} images in {image_dir} have no mask in {mask_dir} with the same stem (e.g. {extra[0]!r})")
    return [Sample(stem, images[stem], masks[stem]) for stem in sorted(masks)]


def _read_split(path: Path) -> list[str]:
    stems = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            stems.append(Path(line.split()[0]).stem)
    if not stems:
        raise UserError(f"{path}: split list is empty")
    return stems


def _apply_split(samples: list[Sample], split_file: Path, split: str) -> list[Sample]:
    stems = _read_split(split_file)
    by_stem = {s.stem: s for s in samples}
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise UserError(f"{split_file}: {len(missing)} of {len(stems)} names of split {split!r} are not in the dataset (e.g. {missing[0]!r})")
    if len(set(stems)) != len(stems):
        raise UserError(f"{split_file}: split {split!r} lists a name twice")
    return [by_stem[s] for s in sorted(stems)]


def _generic_subfolders(root: Path) -> tuple[Path, Path]:
    subfolders = {p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}

    def pick(names, keywords):
        for name in names:
            if name in subfolders:
                return subfolders[name]
        hits = [p for key, p in subfolders.items() if any(k in key for k in keywords)]
        return hits[0] if len(hits) == 1 else None

    image_dir = pick(IMAGE_DIR_NAMES, ("image", "img"))
    mask_dir = pick(MASK_DIR_NAMES, ("mask", "gt", "ground"))
    if image_dir is None or mask_dir is None or image_dir == mask_dir:
        names = ", ".join(sorted(p.name for p in subfolders.values())) or "none"
        raise UserError(f"{root}: expected an image sub-folder (e.g. images/) and a mask sub-folder (e.g. masks/) with files matched by stem; found sub-folders: {names}")
    return image_dir, mask_dir


def open_folder(path: str | Path, split: str | None = None) -> SODDataset:
    """Any folder with an image sub-folder and a mask sub-folder matched by stem; ``split`` selects the
    names listed in ``<path>/<split>.txt``."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    image_dir, mask_dir = _generic_subfolders(root)
    samples = _pair(image_dir, mask_dir, IMAGE_EXTS, MASK_EXTS, str(root))
    if split is not None:
        split_file = root / f"{split}.txt"
        if split_file.is_file():
            samples = _apply_split(samples, split_file, split)
        elif split not in ("all", "test"):
            raise UserError(f"--split {split}: {split_file} not found")
    layout = {"images": image_dir.name, "masks": mask_dir.name}
    return SODDataset(root.name or str(root), root, samples, split=split, layout=layout)


# --------------------------------------------------------------------------------------------------
# Known datasets


def _locate(root: Path, manifest: dict) -> tuple[dict, Path, Path] | None:
    for layout in manifest["layouts"]:
        mask_dir = _find_subfolder(root, layout["masks"], (layout["mask_ext"],))
        if mask_dir is None:
            continue
        image_dir = _find_subfolder(root, layout["images"], (layout["image_ext"],))
        if image_dir is not None:
            return layout, image_dir, mask_dir
    return None


def _expected_layout(manifest: dict) -> str:
    layout = manifest["layouts"][0]
    return f"{layout['images']}/*{layout['image_ext']} and {layout['masks']}/*{layout['mask_ext']}"


def _download(manifest: dict, root: Path) -> None:
    """Fetch and unpack the official archives into ``root``; ConnectionError when offline."""
    from discovery.io import read_json, write_json
    from discovery.weights import download, sha256_of

    record = []
    previous = root / "download.json"
    try:  # the sha256 of each archive as first downloaded: later uses must find the same file
        known = {a["file"]: a["sha256"] for a in read_json(previous)["archives"]} if previous.is_file() else {}
    except (ValueError, KeyError, TypeError):
        known = {}
    for item in manifest["downloads"]:
        archive = root / item["filename"]
        if not archive.exists():
            download(item["url"], archive, item.get("sha256"))
        expected = item.get("sha256") or known.get(item["filename"])
        if expected and sha256_of(archive) != expected:
            raise UserError(f"{archive}: its sha256 is not the {expected} {'published' if item.get('sha256') else 'recorded at its first download'}"
                            f"; delete it and download it again from {item['url']}")
        try:
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.namelist():
                    target = (root / member).resolve()
                    if not target.is_relative_to(root.resolve()):  # a path check, not a string prefix: /data/set2 is not in /data/set
                        raise UserError(f"{archive}: archive member {member!r} points outside {root}; delete {archive} "
                                        f"and download it again from {item['url']}")
                bundle.extractall(root)
        except zipfile.BadZipFile:
            archive.unlink(missing_ok=True)
            raise UserError(f"{archive}: not a zip archive (download from {item['url']} by hand and unzip it into {root})") from None
        record.append({"url": item["url"], "file": item["filename"], "sha256": sha256_of(archive)})
    write_json({"dataset": manifest["name"], "archives": record}, root / "download.json")


def open_known(name: str, root: str | Path | None = None, split: str | None = None, *, download: bool = True) -> SODDataset:
    manifest = load_manifest(name)
    name = manifest["name"]
    if root is None:
        # data/<name>, else the manifest's other usual places (relative to the repository root).
        candidates = [default_data_dir() / name] + [repository_root() / extra for extra in manifest.get("also_look_in", [])]
        root = next((c.resolve() for c in candidates if c.is_dir() and _locate(c, manifest)), candidates[0])
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise UserError(f"--root {root}: not a folder")
    found = _locate(root, manifest) if root.is_dir() else None
    if found is None:
        where = f"place {_expected_layout(manifest)} under {root} (or pass --root)"
        if not manifest["downloads"]:
            note = manifest.get("note", "")
            raise UserError(f"{name}: not found under {root}; {where}. {note}".strip())
        urls = " and ".join(d["url"] for d in manifest["downloads"])
        if not download:
            raise UserError(f"{name}: not found under {root}; download {urls}, unzip into {root}; or {where}")
        created = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        try:  # the download shows its own progress bar; offline it fails at once, with one error line
            _download(manifest, root)
        except ConnectionError as exc:
            if created and not any(root.iterdir()):
                root.rmdir()
            raise UserError(f"{name}: not found under {root} and the download failed ({exc}); download {urls} by hand and unzip into {root}") from None
        found = _locate(root, manifest)
        if found is None:
            raise UserError(f"{name}: downloaded archives into {root} but found no {_expected_layout(manifest)} there")
    layout, image_dir, mask_dir = found
    samples = _pair(image_dir, mask_dir, (layout["image_ext"],), (layout["mask_ext"],), name)
    splits = manifest.get("splits") or {}
    package_splits = manifest.get("package_splits") or {}  # split lists this package ships (data/manifests/)
    if split is None:
        split = manifest.get("default_split")
    if split is not None and split != "all":
        if split in package_splits:
            samples = _apply_split(samples, manifests_dir() / package_splits[split], split)
        elif split in splits:
            candidates = [root / splits[split], image_dir.parent / splits[split]]
            split_file = next((p for p in candidates if p.is_file()), None)
            if split_file is None:
                raise UserError(f"{name}: split list {splits[split]} not found in {root}")
            samples = _apply_split(samples, split_file, split)
        elif splits or split != "test":
            choices = ", ".join(sorted(splits) + sorted(package_splits) + ["all"]) if splits else "test (the whole set)"
            raise UserError(f"--split {split}: {name} has the splits {choices}")
    expected = manifest.get("split_counts", {}).get(split) if split in splits or split in package_splits else manifest.get("count")
    if expected and len(samples) != expected:
        from discovery.runtime import get_logger

        get_logger("datasets").warning(f"{name}: found {len(samples)} images under {root}, the official set has {expected}")
    layout_info = {"images": str(image_dir.relative_to(root)), "masks": str(mask_dir.relative_to(root))}
    return SODDataset(name, root, samples, split=split, manifest=manifest, layout=layout_info)


def open_dataset(name_or_path: str | Path, root: str | Path | None = None, split: str | None = None, *, download: bool = True) -> SODDataset:
    """A known dataset by name (read from ``root``, default ``data/<name>``) or any image/mask folder.

    ``split`` picks a split list (weizmann-horse: ``test`` by default, or ``train``; ``all`` for every
    image; a folder's ``<split>.txt``). A name that is also a folder in the working directory is read as
    the known dataset; write ``./NAME`` for the folder."""
    text = str(name_or_path)
    looks_like_path = os.sep in text or (os.altsep is not None and os.altsep in text)
    if _canonical_name(text) is not None and not looks_like_path:
        return open_known(text, root, split, download=download)
    path = Path(text).expanduser()
    if path.is_dir():
        if root is not None:
            raise UserError(f"--root applies to known datasets only; --dataset {text} is a folder already")
        return open_folder(path, split)
    raise UserError(f"--dataset {text}: not a known dataset ({', '.join(list_datasets())}) and not a folder")
