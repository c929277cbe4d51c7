"""``saliency.self_train``: adapt a segmenter to unlabelled photos of the target domain.

Each round: (1) label every photo with the current segmenter (averaged with its mirror image's map,
``tta="flip"``), refined with the photo (``saliency.refine``, the bilateral solver by default), (2) keep the confident labels: masks whose
area is plausible and whose refined map is decided (mean |2p - 1| high), the ``keep`` best,
(3) fine-tune the segmenter on them mixed with synthetic pairs (``train_segmenter`` with
``init_checkpoint``, so the logs, checkpoints and ``segmenter.pt`` are train-segmenter's).
The next round labels with the new segmenter. No mask file is ever read: only the photos under
``images`` (optionally the names in ``list_file``) are opened. This is the E-BigBiGAN idea
(adapt to the target domain) without an encoder: from the target's images alone.

Resuming: a round whose ``segmenter.pt`` exists is done; an interrupted round continues from its
``checkpoint.pt`` bit for bit (labelling is deterministic), and ``rounds`` may grow on resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from discovery.errors import UserError, library_call
from discovery.runtime import get_logger

log = get_logger("self-train")
SETTINGS = "self_train.json"


class LabelledPhotos(torch.utils.data.Dataset):
    """Pseudo-labelled photos as (image uint8 HxWx3, mask uint8 {0, 1}) pairs with ``keys``."""

    def __init__(self, folder: Path, keys: list[str]):
        self.folder, self.keys = Path(folder), list(keys)

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, index):
        from discovery.images import read_image

        key = self.keys[index]
        image = read_image(self.folder / "images" / f"{key}.png", "RGB")
        mask = read_image(self.folder / "masks" / f"{key}.png", "L")
        return np.ascontiguousarray(image), (mask > 127).astype(np.uint8)


class MixedPairs(torch.utils.data.Dataset):
    """Several pair datasets as one, keys prefixed by their source (the split by key stays stable)."""

    def __init__(self, parts: dict[str, torch.utils.data.Dataset]):
        self.parts = [(name, part) for name, part in parts.items() if len(part)]
        self.keys = [f"{name}-{key}" for name, part in self.parts for key in part.keys]
        self._index = [(p, i) for p, (_, part) in enumerate(self.parts) for i in range(len(part))]

    def __len__(self):
        return len(self._index)

    def __getitem__(self, index):
        part, item = self._index[index]
        return self.parts[part][1][item]


class _Subset(torch.utils.data.Dataset):
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, list(indices)
        self.keys = [dataset.keys[i] for i in self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]


def confidence_of(prob: np.ndarray) -> float:
    """How decided a map is: mean |2p - 1| (1 for a binary map, 0 for one that is 0.5 everywhere)."""
    return float(np.abs(2 * prob.astype(np.float64) - 1).mean())


def label_photos(segmenter, photos: list[Path], folder: Path, *, refine: str, short_side, label_side: int, keep: float,
                 min_area: float, max_area: float, progress: bool) -> dict:
    """Pseudo-label ``photos`` into ``folder`` (images/, masks/ at ``label_side``) and return the kept keys and scores."""
    import cv2

    from discovery.images import read_image, save_png
    from discovery.runtime import progress_bar
    from saliency.refine import refine as refine_map

    scores = []
    bar = progress_bar(len(photos), desc="label", unit="img", enabled=progress)
    for photo in photos:
        rgb = read_image(photo, "RGB", exif=True)
        prob = refine_map(segmenter.predict(rgb, short_side=short_side), rgb, refine)
        area = float((prob >= 0.5).mean())
        scores.append({"photo": photo.name, "key": photo.stem, "confidence": confidence_of(prob), "area": area,
                       "plausible": bool(min_area < area < max_area)})
        scale = label_side / min(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        save_png(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), folder / "images" / f"{photo.stem}.png")
        save_png(((cv2.resize(prob, size, interpolation=cv2.INTER_LINEAR) >= 0.5) * 255).astype(np.uint8), folder / "masks" / f"{photo.stem}.png")
        bar.update(1)
    bar.close()
    plausible = [s for s in scores if s["plausible"]]
    plausible.sort(key=lambda s: (-s["confidence"], s["key"]))
    kept = plausible[: max(1, int(round(keep * len(scores))))] if plausible else []
    if not kept:
        raise UserError(f"self-train: no photo got a plausible mask (area in ({min_area}, {max_area})); check the checkpoint")
    return {"kept": sorted(s["key"] for s in kept), "scores": scores}


@library_call
def self_train(
    checkpoint,                       # segmenter.pt to start from (train-segmenter's)
    images,                           # folder of unlabelled photos of the target domain (masks are never read)
    out,                              # run folder: round-NN/ (labels, train-segmenter run), segmenter.pt, summary.json
    *,
    list_file=None,                   # only the photos named here (one stem a line), e.g. an unlabelled train split
    rounds: int = 3,                  # label -> fine-tune rounds (horse val IoU rose for 3, fell at 4)
    refine: str = "bilateral",        # refinement of the labels (saliency.refine)
    tta: str = "flip",                # test-time augmentation of the labelling ("flip": averaged with the mirror image; "none")
    keep: float = 0.5,                # share of the photos kept as labels, most confident first
    min_area: float = 0.05,           # labels covering less of the photo are implausible ...
    max_area: float = 0.8,            # ... and so are those covering more
    synthetic=None,                   # pairs folder from `saliency synthesize` mixed into every round (None: photos only)
    synthetic_pairs: int | None = None,  # how many synthetic pairs to mix in (None: as many as kept photos)
    steps: int = 300,                 # fine-tuning steps per round
    batch_size: int = 16,             # pairs per step
    lr: float = 3e-4,                 # Adam learning rate of the fine-tuning
    image_size: int | None = None,    # training crop size (None: the checkpoint's)
    label_side: int | None = None,    # short side the labelled photos are stored at (None: 2 x image_size)
    short_side="auto",                # labelling: predict at this short side ("auto": the checkpoint's training size)
    val_fraction: float = 0.1,        # held-out share of the labels (train-segmenter's validation, on pseudo-labels)
    seed: int = 0,                    # data order, augmentation
    device=None,                      # None / "auto": CUDA when present
    workers: int = 0,                 # data-loader processes
    resume: bool = False,             # continue an interrupted run in out
    progress: bool = True,            # progress bars
) -> dict:
    """Self-train ``checkpoint`` on unlabelled ``images``; returns the summary (also out/summary.json)."""
    from discovery.io import ensure_fresh_output, read_json, run_manifest, write_json
    from discovery.runtime import check_resume, resolve_device
    from saliency.refine import require_refiner
    from saliency.segmenter import check_tta, load_segmenter
    from saliency.segmenter_training import train_segmenter

    # Check the request.
    if int(rounds) < 1 or int(steps) < 1 or int(batch_size) < 1:
        raise UserError("--rounds, --steps and --batch-size: must be at least 1")
    if not 0 < keep <= 1:
        raise UserError(f"--keep {keep}: must be a share in (0, 1]")
    if not 0 <= min_area < max_area <= 1:
        raise UserError(f"--min-area {min_area} / --max-area {max_area}: need 0 <= min < max <= 1")
    require_refiner(refine)
    check_tta(tta)
    out = Path(out)
    ensure_fresh_output(out, resume, SETTINGS)
    from discovery.generators.horse_training import list_training_images

    photos = list_training_images(images, list_file)  # the photos (or the listed ones) of the folder, as train-gan reads them
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    first = load_segmenter(checkpoint, device)  # checked before anything is written
    image_size = int(image_size or first.training_size)
    label_side = int(label_side or 2 * image_size)
    synthetic_set = None
    if synthetic is not None:
        from saliency.pairs import open_pairs

        synthetic_set = open_pairs(synthetic)
    settings = {
        "checkpoint": str(Path(checkpoint).resolve()), "images": str(Path(images).resolve()),
        "list_file": str(Path(list_file).resolve()) if list_file else None, "photos": [p.name for p in photos],
        "refine": refine, "tta": tta, "keep": keep, "min_area": min_area, "max_area": max_area,
        "synthetic": str(Path(synthetic).resolve()) if synthetic else None, "synthetic_pairs": synthetic_pairs, "steps": steps,
        "batch_size": batch_size, "lr": lr, "image_size": image_size, "label_side": label_side, "short_side": short_side,
        "val_fraction": val_fraction, "seed": seed,
    }
    if (out / SETTINGS).is_file():
        check_resume(read_json(out / SETTINGS)["settings"], settings, out)
    else:
        write_json({"settings": settings, "manifest": run_manifest()}, out / SETTINGS)

    current, history = Path(checkpoint), []
    for round_index in range(1, int(rounds) + 1):
        folder = out / f"round-{round_index:02d}"
        run = folder / "train"
        if (run / "segmenter.pt").is_file() and (folder / "labels.json").is_file():
            log.info(f"== round {round_index}: done already ({folder})")
            history.append(read_json(folder / "labels.json")["summary"])
            current = run / "segmenter.pt"
            continue
        log.info(f"== round {round_index}: label {len(photos)} photos with {current} (refine {refine})")
        labelled = folder / "labels"
        if (folder / "labels.json").is_file():
            labels = read_json(folder / "labels.json")
        else:
            segmenter = load_segmenter(current, device, tta=tta)
            labels = label_photos(segmenter, photos, labelled, refine=refine, short_side=short_side, label_side=label_side, keep=keep,
                                  min_area=min_area, max_area=max_area, progress=progress)
            kept_scores = [s for s in labels["scores"] if s["key"] in set(labels["kept"])]
            labels["summary"] = {"round": round_index, "photos": len(photos), "kept": len(labels["kept"]),
                                 "mean_confidence_kept": float(np.mean([s["confidence"] for s in kept_scores])),
                                 "mean_area_kept": float(np.mean([s["area"] for s in kept_scores]))}
            write_json(labels, folder / "labels.json")  # written last: the labels are complete
        parts = {"photo": LabelledPhotos(labelled, labels["kept"])}
        if synthetic_set is not None:
            count = min(len(synthetic_set), synthetic_pairs if synthetic_pairs is not None else len(labels["kept"]))
            pick = np.random.default_rng(seed + round_index).choice(len(synthetic_set), size=count, replace=False)
            parts["synthetic"] = _Subset(synthetic_set, sorted(int(i) for i in pick))
        data = MixedPairs(parts)
        log.info(f"   fine-tune on {len(labels['kept'])} photos" + (f" + {len(parts['synthetic'])} synthetic pairs" if "synthetic" in parts else ""))
        summary = train_segmenter(run, data=data, init_checkpoint=current, steps=steps, batch_size=batch_size, lr=lr, lr_decay_every=0,
                                  image_size=image_size, val_fraction=val_fraction, val_pairs=max(1, len(data) // 10),
                                  val_every=steps, checkpoint_every=max(1, steps // 4), log_every=max(1, steps // 10),
                                  resume=(run / "checkpoint.pt").is_file(), seed=seed + round_index, device=device, workers=workers,
                                  progress=progress, **_architecture(first.config))
        history.append({**labels["summary"], "val_iou_on_labels": summary.get("val", {}).get("iou")})
        current = run / "segmenter.pt"

    from discovery.io import atomic_write_bytes

    atomic_write_bytes(Path(current).read_bytes(), out / "segmenter.pt")
    result = {"rounds": history, "segmenter": str(out / "segmenter.pt"), "settings": settings, "manifest": run_manifest()}
    write_json(result, out / "summary.json")
    log.info(f"wrote {out / 'segmenter.pt'} after {len(history)} rounds: " + json.dumps([{k: h.get(k) for k in ("round", "kept")} for h in history]))
    return result


def _architecture(config: dict) -> dict:
    return {"encoder": config["encoder"], "encoder_depth": int(config.get("encoder_depth", 5)),
            "decoder_channels": tuple(config.get("decoder_channels") or ()) or None}
