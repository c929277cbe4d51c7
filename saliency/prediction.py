"""``saliency.predict``: the trained detector on anyone's photos, with the conventions of rembg and co.

For each input photo, ``DIR/<relative folder>/<stem>_<type>.png`` for each requested type:

``map``      the soft saliency map, 8-bit grey (0..255 for 0..1);
``mask``     the binary mask at ``threshold`` (0 / 255);
``rgba``     the photo with the mask (or, with ``soft_alpha``, the soft map) as its alpha channel
             (fully transparent pixels are black, as in rembg's cut-outs);
``overlay``  the photo with the object tinted and outlined, to judge a result at a glance.

Every output has the photo's own size and orientation (EXIF applied). A photo that cannot be read
is reported (stderr and ``predictions.json``) and the others are still written; the call raises
``UserError`` at the end with the count. Files are written atomically, so an interrupted run leaves
only whole files and ``skip_existing`` continues it. Photos are decoded and outputs encoded on
worker threads while the model runs, and photos of one size share batches.
"""

from __future__ import annotations

import copy
import glob
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from discovery.errors import UserError, library_call
from discovery.images import IMAGE_SUFFIXES
from discovery.runtime import get_logger

TYPES = ("map", "mask", "rgba", "overlay")
DEFAULT_TYPES = ("rgba", "mask")
RECORD = "predictions.json"
OVERLAY_COLOUR = (255, 40, 40)

log = get_logger("predict")


def parse_types(types) -> tuple[str, ...]:
    """``"rgba,mask"`` / ``"all"`` / a sequence -> the output types, in TYPES order."""
    if isinstance(types, str):
        types = TYPES if types.strip() == "all" else [t.strip() for t in types.split(",") if t.strip()]
    unknown = [t for t in types if t not in TYPES]
    if unknown or not types:
        raise UserError(f"--type {','.join(types)}: expected a comma-separated subset of {','.join(TYPES)}, or all")
    return tuple(t for t in TYPES if t in types)


def collect_inputs(inputs, recursive: bool = False) -> list[tuple[Path, Path]]:
    """``(photo, folder relative to the output)`` for files, folders (``recursive``: their sub-folders too) and globs."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found.append((path, Path(".")))
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            for file in sorted(path.glob(pattern)):
                if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith("."):
                    found.append((file, file.parent.relative_to(path)))
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True) if Path(m).is_file())
            if not matches:
                raise UserError(f"{item}: no such file or folder, and no file matches it as a pattern")
            found.extend((m, Path(".")) for m in matches)
    if not found:
        raise UserError(f"{', '.join(map(str, inputs))}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found


def output_paths(out: Path, relative: Path, stem: str, types) -> dict[str, Path]:
    return {kind: out / relative / f"{stem}_{kind}.png" for kind in types}


def overlay_image(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The photo, the object tinted and its outline drawn: a picture a person judges at a glance."""
    import cv2

    picture = rgb.astype(np.float32)
    tint = np.asarray(OVERLAY_COLOUR, dtype=np.float32)
    picture[mask] = 0.55 * picture[mask] + 0.45 * tint
    picture = np.clip(picture, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(min(mask.shape) / 200))
    cv2.drawContours(picture, contours, -1, OVERLAY_COLOUR, thickness)
    return picture


def render_outputs(rgb: np.ndarray, prob: np.ndarray, types, threshold: float, soft_alpha: bool) -> dict[str, np.ndarray]:
    """The arrays of each output type for one photo (uint8, the photo's size)."""
    soft = np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)
    mask = prob >= threshold
    binary = mask.astype(np.uint8) * 255
    arrays = {}
    for kind in types:
        if kind == "map":
            arrays[kind] = soft
        elif kind == "mask":
            arrays[kind] = binary
        elif kind == "rgba":
            alpha = soft if soft_alpha else binary
            # Fully transparent pixels carry no colour (as rembg's cut-outs): smaller files, encoded twice as fast.
            arrays[kind] = np.dstack([np.where(alpha[..., None] > 0, rgb, 0).astype(np.uint8), alpha])
        else:
            arrays[kind] = overlay_image(rgb, mask)
    return arrays


@library_call
def predict(
    inputs,                           # image files, folders or glob patterns (a str, a Path or a list of them)
    *,
    checkpoint,                       # segmenter.pt from train-segmenter (or a loaded saliency.segmenter.Segmenter)
    out,                              # output folder: <stem>_<type>.png per photo (sub-folders kept), predictions.json
    types=DEFAULT_TYPES,              # subset of map, mask, rgba, overlay ("all" or "rgba,mask" strings work too)
    threshold: float = 0.5,           # mask = map >= threshold (the papers' protocol)
    soft_alpha: bool = False,         # rgba: the soft map as alpha instead of the binary mask
    short_side="auto",                # predict at this shorter side ("auto": the checkpoint's training size; None: full size)
    refine: str = "none",             # saliency.refine method: none, bilateral, crf, components
    refine_options: dict | None = None,  # that method's options
    tta: str = "none",                # test-time augmentation: "flip" averages with the mirror image (twice the model time)
    batch_size: int = 8,              # photos of one size per forward pass
    recursive: bool = False,          # folders: their sub-folders too
    skip_existing: bool = False,      # keep photos whose outputs all exist (continue an interrupted run)
    workers: int | None = None,       # decoding / encoding threads (None: from the core count)
    device=None,                      # None / "auto": CUDA when present
    progress: bool = True,            # progress bar
) -> dict:
    """Run the detector on photos and write the outputs; returns the record written to ``predictions.json``."""
    from discovery.images import read_image
    from discovery.io import atomic_write_bytes, check_writable, read_json, run_manifest, write_json
    from discovery.runtime import progress_bar
    from saliency.pairs import encode_png
    from saliency.refine import REFINERS, require_refiner
    from saliency.segmenter import Segmenter, check_tta, load_segmenter

    # Check the request before anything is loaded or written.
    types = parse_types(types)
    if not 0 <= float(threshold) <= 1:
        raise UserError(f"--threshold {threshold}: must be in [0, 1]")
    if int(batch_size) < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    if workers is not None and int(workers) < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    if short_side not in ("auto", None) and int(short_side) < 0:
        raise UserError(f"--short-side {short_side}: must be positive (0: full size)")
    require_refiner(refine)
    check_tta(tta)
    photos = collect_inputs(inputs, recursive)
    out = Path(out)
    targets = [output_paths(out, relative, photo.stem, types) for photo, relative in photos]
    seen: dict[Path, Path] = {}
    for (photo, _), paths in zip(photos, targets):
        first = next(iter(paths.values()))
        if first in seen and seen[first] != photo:
            raise UserError(f"{photo} and {seen[first]} would both write {first}; give them different names or folders")
        seen[first] = photo
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    from discovery.io import remove_stale_temporaries

    for folder, names in _by_folder(targets).items():  # what a killed run left of these outputs, nothing else
        if folder.is_dir():
            remove_stale_temporaries(folder, names, recursive=False)
    if isinstance(checkpoint, Segmenter):
        segmenter = checkpoint
        if tta != "none" and segmenter.tta != tta:  # a copy: the caller's segmenter keeps its own setting
            segmenter = copy.copy(checkpoint)
            segmenter.tta = tta
    else:
        segmenter = load_segmenter(checkpoint, device if device is not None else "auto", tta=tta)
    side = segmenter.resolve_short_side(short_side)

    previous = {}
    if skip_existing and (out / RECORD).is_file():
        try:
            previous = {entry["input"]: entry for entry in read_json(out / RECORD).get("inputs", [])}
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            previous = {}
    record: dict = {
        "checkpoint": str(checkpoint) if not isinstance(checkpoint, Segmenter) else "(in memory)",
        "settings": {"types": list(types), "threshold": float(threshold), "soft_alpha": bool(soft_alpha), "short_side": side,
                     "refine": refine, "refine_options": dict(refine_options or {}), "tta": segmenter.tta},
        "inputs": [], "failures": [], "skipped": 0,
    }
    todo = []
    for (photo, relative), paths in zip(photos, targets):
        if skip_existing and all(p.is_file() for p in paths.values()):
            record["skipped"] += 1
            record["inputs"].append(previous.get(str(photo), {"input": str(photo), "outputs": {k: str(v) for k, v in paths.items()}}))
        else:
            todo.append((photo, paths))

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    threads = workers or max(2, min(8, cores))
    started = time.perf_counter()
    bar = progress_bar(len(todo), desc="predict", unit="img", enabled=progress)

    def decode(item):
        photo, _ = item
        begin = time.perf_counter()
        try:
            rgb = read_image(photo, "RGB", exif=True)
            return rgb, segmenter.prepare(rgb, side), time.perf_counter() - begin
        except UserError as exc:
            return exc, None, 0.0

    def finish(photo, paths, rgb, logits, inner, outer, seconds):
        begin = time.perf_counter()
        prob = segmenter.finish(logits, inner, outer)
        if refine != "none":
            prob = REFINERS.get(refine)(prob, rgb, **(refine_options or {}))
        for kind, array in render_outputs(rgb, np.clip(prob, 0, 1), types, float(threshold), soft_alpha).items():
            atomic_write_bytes(encode_png(array), paths[kind], durable=False)
        return {"input": str(photo), "outputs": {k: str(v) for k, v in paths.items()}, "size": [int(rgb.shape[1]), int(rgb.shape[0])],
                "seconds": round(seconds + time.perf_counter() - begin, 4)}

    def report(photo, error):
        message = str(error)
        log.warning(message if message.startswith(str(photo)) else f"{photo}: {message}")
        record["failures"].append({"input": str(photo), "error": message})

    window = max(2 * batch_size, 2 * threads)  # photos decoded ahead, and outputs being written, at most
    with ThreadPoolExecutor(threads) as pool:
        decoding = [(item, pool.submit(decode, item)) for item in todo[:window]]
        upcoming = iter(todo[window:])
        writing: list = []
        buckets: dict[tuple, list] = {}  # input shape -> photos waiting for a full batch

        def run_batch(members):
            import torch

            begin = time.perf_counter()
            with torch.no_grad():
                logits = segmenter.forward(torch.cat([m[3][0] for m in members]))
            share = (time.perf_counter() - begin) / len(members)
            for j, (photo, paths, rgb, (x, inner, outer), seconds) in enumerate(members):
                writing.append((photo, pool.submit(finish, photo, paths, rgb, logits[j : j + 1], inner, outer, seconds + share)))
            while len(writing) > window:
                _collect(writing.pop(0), record, report, bar)

        while decoding:
            (photo, paths), future = decoding.pop(0)
            following = next(upcoming, None)
            if following is not None:
                decoding.append((following, pool.submit(decode, following)))
            rgb, prepared, seconds = future.result()
            if isinstance(rgb, UserError):
                report(photo, rgb)
                bar.update(1)
                continue
            bucket = buckets.setdefault(tuple(prepared[0].shape), [])
            bucket.append((photo, paths, rgb, prepared, seconds))
            if len(bucket) == batch_size:
                run_batch(buckets.pop(tuple(prepared[0].shape)))
        for members in buckets.values():
            run_batch(members)
        while writing:
            _collect(writing.pop(0), record, report, bar)
    bar.close()

    elapsed = time.perf_counter() - started
    written = len(record["inputs"]) - record["skipped"]
    record["summary"] = {"inputs": len(photos), "written": written, "skipped": record["skipped"], "failed": len(record["failures"]),
                         "seconds": round(elapsed, 3), "images_per_second": round(written / elapsed, 3) if elapsed > 0 and written else None}
    record["manifest"] = run_manifest()
    write_json(record, out / RECORD)
    log.info(f"wrote {written} photo{'s' if written != 1 else ''} to {out} ({', '.join(types)})"
             + (f", {record['skipped']} already done" if record["skipped"] else "")
             + (f", {written / elapsed:.1f} images/s" if written and elapsed > 0 else ""))
    if record["failures"]:
        raise UserError(f"{len(record['failures'])} of {len(photos)} inputs could not be read (named above and in {out / RECORD}); "
                        "the others were written")
    return record


def _by_folder(targets) -> dict:
    folders: dict[Path, set[str]] = {}
    for paths in targets:
        for path in paths.values():
            folders.setdefault(path.parent, set()).add(path.name)
    return folders


def _collect(entry, record, report, bar) -> None:
    photo, future = entry
    bar.update(1)
    try:
        record["inputs"].append(future.result())
    except UserError as exc:
        report(photo, exc)
    except OSError as exc:
        raise UserError(f"{photo}: writing its outputs failed ({exc.strerror or exc}); the photos before it were written") from None
