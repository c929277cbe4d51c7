"""Evaluate a saliency predictor, or a folder of saved saliency maps, on a dataset; write the report.

Two entry points share one pipeline: ``evaluate_predictor`` runs ``predict(image) -> HxW map`` over the
dataset; ``evaluate_prediction_folder`` reads maps saved by any method (PNG/JPG/BMP/TIFF uint8 or 16-bit,
or ``.npy`` float in [0, 1]) matched to the masks by file stem. Each map is brought to its mask's size,
reduced to per-image statistics (``saliency.metrics.image_statistics``) in a pool of worker processes,
and the dataset numbers, curves and report (``saliency.report``) are computed at the end.

Nothing is left behind when the input is bad: an output folder this call created is removed again
when it fails, so a failed run never looks like a finished one.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import time
from collections import deque
from itertools import repeat
from pathlib import Path
from typing import Callable

import numpy as np

from discovery.errors import UserError, library_call
from saliency.datasets import SODDataset, read_grey, read_mask, read_rgb
from saliency.metrics import SaliencyMetrics, image_statistics

PREDICTION_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")
GRID_COUNT = 4  # worst and best images shown in worst_best.png
SERIAL_BELOW = 24  # smaller datasets are not worth starting worker processes for


# --------------------------------------------------------------------------------------------------
# Reading and shaping predictions


def read_prediction(path: str | Path) -> np.ndarray:
    """A saved saliency map as uint8 HxW (image files) or float64 HxW in [0, 1] (.npy, 16-bit images)."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        return read_grey(path)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npy array ({exc})") from None
    array = np.squeeze(array)
    if array.ndim != 2:
        raise UserError(f"{path}: array of shape {array.shape}; expected an HxW saliency map")
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.float64)
    if not np.issubdtype(array.dtype, np.floating):
        raise UserError(f"{path}: array of type {array.dtype}; expected float in [0, 1] or uint8")
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or array.min() < -1e-6 or array.max() > 1 + 1e-6:
        raise UserError(f"{path}: values outside [0, 1] (or NaN); save probabilities, not logits")
    return np.clip(array, 0.0, 1.0)


def fit_to(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a map to (H, W); uint8 stays uint8, floats become float32."""
    import cv2

    if pred.shape == tuple(shape):
        return pred
    source = pred if pred.dtype == np.uint8 else pred.astype(np.float32)
    resized = cv2.resize(source, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return resized if resized.dtype == np.uint8 else np.clip(resized, 0.0, 1.0)


def _size(shape) -> str:
    return f"{shape[1]}x{shape[0]}"


def _folder_task(pred_path: Path, mask_path: Path, resize: bool, normalize: str) -> dict:
    gt = read_mask(mask_path)
    pred = read_prediction(pred_path)
    if pred.shape != gt.shape:
        if not resize:
            raise UserError(f"{pred_path}: prediction is {_size(pred.shape)} but its mask {mask_path.name} is {_size(gt.shape)}; pass --resize-predictions to resize predictions to the masks")
        pred = fit_to(pred, gt.shape)
    return image_statistics(pred, gt, normalize=normalize)


def _array_task(pred: np.ndarray, gt: np.ndarray, normalize: str) -> dict:
    return image_statistics(pred, gt, normalize=normalize)


# --------------------------------------------------------------------------------------------------
# Worker processes


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _started(_: int) -> int:
    return os.getpid()


@contextlib.contextmanager
def _pool(workers: int):
    """A process pool, or None for in-process work (workers <= 1).

    Linux forks the workers: they start in milliseconds and inherit the loaded modules (a fresh
    interpreter would import torch again through ``discovery``). Two rules keep forking safe: every
    worker is started at once, before this process runs a predictor, and OpenCV is set to one thread
    here rather than in the workers -- ``cv2.setNumThreads`` in a forked child whose parent had used
    OpenCV's thread pool never returns."""
    if workers <= 1:
        yield None
        return
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    import cv2

    method = "fork" if sys.platform.startswith("linux") else "spawn"
    previous_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one process per core already; inherited by the forked workers
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
    try:
        list(executor.map(_started, range(workers)))
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(previous_threads)


def _resolve_workers(workers: int | None, count: int) -> int:
    if workers is None:
        return 1 if count < SERIAL_BELOW else default_workers()
    return max(1, int(workers))


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", dynamic_ncols=True)


@contextlib.contextmanager
def _output_guard(out_dir: Path):
    """Remove ``out_dir`` again if this call created it and then failed."""
    existed = out_dir.exists()
    try:
        yield
    except BaseException:
        if not existed and out_dir.exists():
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _check_out(out_dir: Path) -> Path:
    from discovery.io import check_writable

    out_dir = Path(out_dir)
    check_writable(out_dir)  # before any prediction is computed
    return out_dir


# --------------------------------------------------------------------------------------------------
# Entry points


def _call_with_short_side(predict: Callable, short_side: int | None) -> Callable:
    """``predict(image)``, passing ``short_side=`` along when the predictor takes it."""
    try:
        takes = "short_side" in inspect.signature(predict).parameters
    except (TypeError, ValueError):
        takes = False
    if takes:  # None included: full size (a segmenter's own default would be its training size)
        return lambda image: predict(image, short_side=short_side)
    return predict


def _as_map(pred, stem: str) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim == 3 and pred.shape[2] == 1:
        pred = pred[:, :, 0]
    if pred.ndim != 2:
        raise UserError(f"{stem}: the predictor returned shape {pred.shape}; expected an HxW map")
    if pred.dtype != np.uint8:
        pred = pred.astype(np.float32)
        if not np.isfinite(pred).all():
            raise UserError(f"{stem}: the predictor returned NaN or infinite values")
        pred = np.clip(pred, 0.0, 1.0)
    return pred


def _to_uint8(pred: np.ndarray) -> np.ndarray:
    return pred if pred.dtype == np.uint8 else np.round(pred * 255).astype(np.uint8)


def evaluate_predictor(
    predict: Callable[[np.ndarray], np.ndarray],
    dataset: SODDataset,
    out_dir: str | Path,
    *,
    name: str,
    short_side: int | None = 128,  # forwarded to predict(image, short_side=...) when it takes it
    progress: bool = True,  # tqdm bar
    save_predictions: bool = False,  # also write OUT/predictions/<stem>.png (uint8)
    workers: int | None = None,  # metric processes; None: all cores (max 8), in-process below 24 images
    normalize: str = "none",  # "minmax": stretch each map to [0, 1] first (MATLAB toolbox convention)
    source: dict | None = None,  # what produced the predictions, for results.json
) -> dict:
    """Run ``predict(image uint8 HxWx3) -> float HxW in [0, 1]`` on every image, score it against the
    mask (predictions are resized to the mask's size) and write the report into ``out_dir``."""
    out_dir = _check_out(out_dir)
    call = _call_with_short_side(predict, short_side)
    workers = _resolve_workers(workers, len(dataset))
    stats: list[dict | None] = [None] * len(dataset)
    start = time.perf_counter()
    predict_seconds = 0.0
    with _output_guard(out_dir), _pool(workers) as executor:
        pending: deque = deque()
        for index, sample in enumerate(_progress(dataset, len(dataset), f"evaluate {name}", progress)):
            image = read_rgb(sample.image_path)
            gt = read_mask(sample.mask_path)
            if image.shape[:2] != gt.shape:  # a stretched mask would score the wrong pixels
                raise UserError(f"{sample.image_path}: the photo is {_size(image.shape)} but its mask {sample.mask_path.name} is "
                                f"{_size(gt.shape)}; they must have the same size")
            t0 = time.perf_counter()
            pred = _as_map(call(image), sample.stem)
            predict_seconds += time.perf_counter() - t0
            pred = fit_to(pred, gt.shape)
            if save_predictions:
                from discovery.images import save_png

                save_png(_to_uint8(pred), out_dir / "predictions" / f"{sample.stem}.png")
            if executor is None:
                stats[index] = _array_task(pred, gt, normalize)
                continue
            pending.append((index, executor.submit(_array_task, pred, gt, normalize)))
            while len(pending) > 2 * workers + 2:
                i, future = pending.popleft()
                stats[i] = future.result()
        for i, future in pending:
            stats[i] = future.result()
        metric_seconds = time.perf_counter() - start

        def grid_prediction(sample):
            image = read_rgb(sample.image_path)
            gt_shape = read_mask(sample.mask_path).shape
            return fit_to(_as_map(call(image), sample.stem), gt_shape)

        config = {"short_side": short_side, "normalize": normalize, "workers": workers}
        timing = {"seconds": metric_seconds, "predict_seconds": predict_seconds, "images_per_second": len(dataset) / max(metric_seconds, 1e-9)}
        source = source or {"kind": "predictor", "predictor": getattr(predict, "__qualname__", repr(predict))}
        return _finish(stats, dataset, out_dir, name, source, config, timing, grid_prediction)


def _prediction_files(pred_dir: Path, dataset: SODDataset) -> list[Path]:
    if not pred_dir.is_dir():
        raise UserError(f"--predictions {pred_dir}: no such folder")
    found: dict[str, Path] = {}
    for path in sorted(pred_dir.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in PREDICTION_EXTS:
            continue
        if path.stem in found:
            raise UserError(f"--predictions {pred_dir}: two maps share the stem {path.stem!r} ({found[path.stem].name}, {path.name})")
        found[path.stem] = path
    if not found:
        raise UserError(f"--predictions {pred_dir}: no saliency maps ({', '.join(PREDICTION_EXTS)})")
    missing = [stem for stem in dataset.stems if stem not in found]
    if missing:
        raise UserError(
            f"--predictions {pred_dir}: {len(missing)} of {len(dataset)} images of {dataset.name} have no map with the same file stem (e.g. {missing[0]!r})"
        )
    return [found[stem] for stem in dataset.stems]


def evaluate_prediction_folder(
    pred_dir: str | Path,
    dataset: SODDataset,
    out_dir: str | Path,
    *,
    name: str | None = None,  # label in the report; default: the folder's name
    resize: bool = False,  # resize maps whose size differs from their mask's (else that is an error)
    normalize: str = "none",  # "minmax": stretch each map to [0, 1] first (MATLAB toolbox convention)
    workers: int | None = None,  # metric processes; None: all cores (max 8), in-process below 24 images
    progress: bool = True,
) -> dict:
    """Score saliency maps saved by any method, matched to the dataset's masks by file stem."""
    pred_dir = Path(pred_dir)
    out_dir = _check_out(out_dir)
    files = _prediction_files(pred_dir, dataset)
    name = name or pred_dir.resolve().name
    workers = _resolve_workers(workers, len(dataset))
    start = time.perf_counter()
    with _output_guard(out_dir), _pool(workers) as executor:
        masks = [s.mask_path for s in dataset]
        if executor is None:
            results = map(_folder_task, files, masks, repeat(resize), repeat(normalize))
        else:
            chunk = max(1, min(16, len(files) // (8 * workers)))
            results = executor.map(_folder_task, files, masks, repeat(resize), repeat(normalize), chunksize=chunk)
        stats = list(_progress(results, len(files), f"evaluate {name}", progress))
        metric_seconds = time.perf_counter() - start
        by_stem = dict(zip(dataset.stems, files))

        def grid_prediction(sample):
            gt_shape = read_mask(sample.mask_path).shape
            return fit_to(read_prediction(by_stem[sample.stem]), gt_shape)

        config = {"resize_predictions": resize, "normalize": normalize, "workers": workers}
        timing = {"seconds": metric_seconds, "images_per_second": len(files) / max(metric_seconds, 1e-9)}
        source = {"kind": "predictions", "path": str(pred_dir), "maps_in_folder": len(list(p for p in pred_dir.iterdir() if p.suffix.lower() in PREDICTION_EXTS))}
        return _finish(stats, dataset, out_dir, name, source, config, timing, grid_prediction)


# --------------------------------------------------------------------------------------------------
# Results


def _finish(stats, dataset: SODDataset, out_dir: Path, name: str, source: dict, config: dict, timing: dict, grid_prediction) -> dict:
    from discovery.io import run_manifest
    from saliency.report import published_figures, write_report

    metrics = SaliencyMetrics()
    for sample, image_stats in zip(dataset, stats):
        metrics.update_stats(image_stats, sample.stem)
    computed = metrics.compute()
    per_image = computed["per_image"]
    keys = [k for k in per_image if k != "name"]
    rows = [{"stem": stem, **{k: float(per_image[k][i]) for k in keys}} for i, stem in enumerate(per_image["name"])]

    order = sorted(range(len(rows)), key=lambda i: (rows[i]["iou"], rows[i]["stem"]))
    count = min(GRID_COUNT, len(rows) // 2) if len(rows) > 1 else len(rows)
    chosen = [("worst", i) for i in order[:count]] + [("best", i) for i in reversed(order[len(order) - count :])] if count else []
    grid = []
    for label, i in chosen:
        sample = dataset.by_stem(rows[i]["stem"])
        grid.append(
            {
                "label": label,
                "stem": sample.stem,
                "iou": rows[i]["iou"],
                "image": read_rgb(sample.image_path),
                "gt": read_mask(sample.mask_path),
                "pred": grid_prediction(sample),
            }
        )

    results = {
        "name": name,
        "source": source,
        "dataset": dataset.describe(),
        "metrics": computed["metrics"],
        "published": published_figures(dataset.name),
        "config": config,
        "timing": timing,
        "curves": {k: np.asarray(v).tolist() for k, v in computed["curves"].items()},
        "per_image": rows,
        "manifest": run_manifest(),
    }
    files = write_report(results, out_dir, grid)
    results["files"] = files
    return results


DEFAULT_OUT = "outputs/evaluate"


@library_call
def evaluate(
    dataset,                          # ECSSD, DUTS-TE, DUT-OMRON, SOD, weizmann-horse, a folder with images/ + masks/, or an SODDataset
    out=None,                         # report folder; None: outputs/evaluate/<dataset>-<source>
    *,
    checkpoint=None,                  # segmenter.pt from train-segmenter ...
    predictions=None,                 # ... or a folder of saved maps (PNG/JPG uint8 or .npy in [0, 1]) named like the masks ...
    baseline=None,                    # ... or a reference predictor: all-foreground, center-prior, classical
    root=None,                        # where a known dataset lives (None: data/<name>)
    split=None,                       # split list (None: the dataset's default; "all": every image)
    name=None,                        # label of this run in the report (None: named after the source)
    short_side: int | None = 128,     # checkpoint: predict at this shorter side, resized back to the mask (None/0: full size)
    save_predictions: bool = False,   # checkpoint / baseline: also write out/predictions/<stem>.png
    resize_predictions: bool = False, # predictions: resize maps of another size than their mask (else an error)
    normalize: str = "none",          # "minmax": stretch each map to [0, 1] first (MATLAB toolbox)
    workers: int | None = None,       # processes computing the metrics (None: all cores, at most 8)
    download: bool = True,            # fetch a missing known dataset from its official site when online
    progress: bool = True,            # progress bar
    device=None,                      # checkpoint: None / "auto": CUDA when present
    refine: str = "none",             # checkpoint / baseline: refine each map with its photo (saliency.refine: bilateral, crf, components)
    refine_options: dict | None = None,  # that method's options
    tta: str = "none",                # checkpoint: test-time augmentation, "flip" averages with the mirror image
) -> dict:
    """The evaluation stage: every metric of the protocol for one source of maps; returns the results."""
    from saliency.datasets import SODDataset, open_dataset

    sources = [x is not None for x in (checkpoint, predictions, baseline)]
    if sum(sources) != 1:
        raise UserError("give exactly one of --checkpoint, --predictions or --baseline")
    if short_side is not None and short_side < 0:
        raise UserError(f"--short-side {short_side}: must be positive (or 0 for full size)")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    if normalize not in ("none", "minmax"):
        raise UserError(f"normalize {normalize!r}: expected 'none' or 'minmax'")
    if predictions is not None and save_predictions:
        raise UserError("--save-predictions applies to --checkpoint and --baseline; --predictions are saved already")
    if predictions is None and resize_predictions:
        raise UserError("--resize-predictions applies to --predictions only (model and baseline maps are always resized to the mask)")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UserError(f"--checkpoint {checkpoint}: file not found")
    from saliency.segmenter import check_tta

    check_tta(tta)
    if checkpoint is None and tta != "none":
        raise UserError("--tta applies to --checkpoint only")
    from saliency.refine import refined, require_refiner

    require_refiner(refine)
    if predictions is not None and refine != "none":
        raise UserError("--refine applies to --checkpoint and --baseline (saved maps are scored as they are)")
    if not isinstance(dataset, SODDataset):
        dataset = open_dataset(dataset, root, split, download=download)
    if out is None:
        tag = (Path(checkpoint).resolve().parent.name or "checkpoint") if checkpoint else (Path(predictions).resolve().name if predictions else baseline)
        out = Path(DEFAULT_OUT) / f"{dataset.name}-{tag}"
    out = _check_out(Path(out))
    common = dict(workers=workers, progress=progress)
    if predictions is not None:
        results = evaluate_prediction_folder(predictions, dataset, out, name=name, resize=resize_predictions, normalize=normalize, **common)
    elif baseline is not None:
        from saliency.baselines import get_baseline

        results = evaluate_predictor(refined(get_baseline(baseline), refine, refine_options), dataset, out,
                                     name=name or baseline + ("" if refine == "none" else f" + {refine}"), short_side=None,
                                     save_predictions=save_predictions, normalize=normalize,
                                     source={"kind": "baseline", "baseline": baseline}, **common)
    else:
        from discovery.runtime import resolve_device
        from saliency.segmenter import load_segmenter

        segmenter = load_segmenter(checkpoint, resolve_device(device), tta=tta)
        label = f"segmenter ({Path(checkpoint).name})" + ("" if tta == "none" else f" + {tta} TTA") + ("" if refine == "none" else f" + {refine}")
        results = evaluate_predictor(refined(segmenter.predict, refine, refine_options), dataset, out, name=name or label,
                                     short_side=short_side or None, save_predictions=save_predictions, normalize=normalize,
                                     source={"kind": "checkpoint", "path": str(checkpoint), "refine": refine, "tta": tta}, **common)
    from discovery.runtime import get_logger

    m = results["metrics"]
    log = get_logger("evaluate")
    log.info(f"{results['name']} on {dataset.name} ({len(dataset)} images): max_f_beta {m['max_f_beta']:.3f}  IoU {m['iou']:.3f}  "
             f"accuracy {m['accuracy']:.3f}  MAE {m['mae']:.3f}  S {m['s_measure']:.3f}  wF {m['weighted_f']:.3f}")
    log.info(f"report: {results['files']['markdown']}")
    return results
