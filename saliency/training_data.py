"""The training data of ``train_segmenter``: augmentation, the held-out split, and two resumable streams.

``FolderStream`` reads a pairs folder (``saliency.pairs``) in a permutation per epoch; sample
position p of the global stream is item ``perm_epoch[p % n]`` with augmentation seed f(seed, p),
so it is a pure function of (seed, step) and a resume continues it exactly, for any number of DDP
processes (each takes its slice of every global batch). ``SynthStream`` draws pairs on the fly from
a ``PairSynthesizer`` with latents seeded by (seed, rank, step). Augmentation is albumentations:
random resized crop, horizontal flip and colour jitter, the mask following the image.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from discovery.errors import UserError

def build_transform(image_size: int, augment: bool, crop_scale=(0.5, 1.0)):
    """Pairs-aware albumentations pipeline: geometric ops move the mask with nearest interpolation.

    Only horizontal flips: salient objects stand on the ground, upside-down scenes teach nothing."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
    import albumentations as A
    import cv2

    size = (int(image_size), int(image_size))
    if augment:
        ops = [
            A.RandomResizedCrop(size=size, scale=tuple(crop_scale), ratio=(3 / 4, 4 / 3), interpolation=cv2.INTER_LINEAR,
                                mask_interpolation=cv2.INTER_NEAREST, p=1.0),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=0.8),
        ]
    else:
        ops = [A.Resize(*size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)]
    return A.Compose(ops, seed=0)


def _sample_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def apply_transform(transform, image, mask, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One augmented pair, determined by ``seed`` alone (whichever worker process runs it)."""
    from saliency.segmenter import as_rgb

    transform.set_random_seed(int(seed))
    result = transform(image=as_rgb(np.asarray(image)), mask=(np.asarray(mask) > 0).astype(np.uint8))
    return np.array(result["image"], dtype=np.uint8, order="C"), np.array(result["mask"], dtype=np.uint8, order="C")  # own, writable copies


def to_input(images: torch.Tensor, device) -> torch.Tensor:
    from saliency.segmenter import normalize  # the same convention Segmenter.predict uses

    x = normalize(images.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cuda" else x


def _key_rank(key) -> str:
    return hashlib.sha1(str(key).encode("utf-8")).hexdigest()


def split_by_key(keys, val_fraction: float, val_pairs: int) -> tuple[list[int], list[int]]:
    """Deterministic held-out split: the pairs whose key hashes lowest, round(fraction * n) of
    them (at least 1, at most ``val_pairs``). Independent of the seed, so runs compare."""
    keys = list(keys)
    n = len(keys)
    count = min(max(1, round(val_fraction * n)), val_pairs)
    if n - count < 1:
        raise UserError(f"only {n} pairs: too few to hold {count} out for validation and train on the rest")
    order = sorted(range(n), key=lambda i: _key_rank(keys[i]))
    val = sorted(order[:count])
    held = set(val)
    return [i for i in range(n) if i not in held], val


def open_training_pairs(data):
    """A path goes through saliency.pairs.open_pairs; a Dataset with .keys is used as is."""
    if not isinstance(data, (str, Path)):
        if not hasattr(data, "keys") or not hasattr(data, "__getitem__"):
            raise UserError("data: expected a pairs folder or a Dataset of (image, mask) pairs with .keys")
        if len(data) == 0:
            raise UserError("data: the pairs dataset is empty")
        return data, f"{type(data).__name__}"
    folder = Path(data)
    if not folder.is_dir():
        raise UserError(f"--data {folder}: folder not found (expected pairs written by `saliency synthesize`)")
    from saliency.pairs import open_pairs

    pairs = open_pairs(folder)
    if len(pairs) == 0:
        raise UserError(f"--data {folder}: holds no pairs (expected images/ + masks/ or shards/ from `saliency synthesize`)")
    return pairs, str(folder)


def _stack(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs])))


def prepare_folder_val(pairs, indices, transform):
    return _stack([apply_transform(transform, *pairs[i], seed=0) for i in indices])


class _StreamSampler(torch.utils.data.Sampler):
    """Endless (index, augmentation seed) stream of one process, from ``start_step`` on.

    Global sample position p = step * batch_size + rank * rank_batch + j; epoch e = p // n is
    a permutation seeded by (seed, e)."""

    def __init__(self, n: int, seed: int, batch_size: int, rank: int, rank_batch: int, start_step: int = 0):
        self.n, self.seed, self.batch_size, self.rank, self.rank_batch = n, seed, batch_size, rank, rank_batch
        self.start_step = start_step

    def __iter__(self):
        epoch_now, perm = -1, None
        step = self.start_step
        while True:
            base = step * self.batch_size + self.rank * self.rank_batch
            for j in range(self.rank_batch):
                position = base + j
                epoch, i = divmod(position, self.n)
                if epoch != epoch_now:
                    perm, epoch_now = np.random.default_rng([self.seed, epoch]).permutation(self.n), epoch
                yield int(perm[i]), _sample_seed(self.seed, 1, position)
            step += 1


class _AugmentedPairs(torch.utils.data.Dataset):
    def __init__(self, pairs, indices, transform):
        self.pairs, self.indices, self.transform = pairs, list(indices), transform

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, item):
        index, seed = item
        image, mask = apply_transform(self.transform, *self.pairs[self.indices[index]], seed=seed)
        return torch.from_numpy(image), torch.from_numpy(mask)


class FolderStream:
    """Batches of augmented training pairs from a pairs folder; the state is the step."""

    def __init__(self, pairs, indices, transform, *, seed, batch_size, rank, rank_batch, workers, pin):
        self.dataset = _AugmentedPairs(pairs, indices, transform)
        self.size = len(indices)
        self.seed, self.batch_size, self.rank, self.rank_batch = seed, batch_size, rank, rank_batch
        self.workers, self.pin = workers, pin
        self.step = 0
        self._iterator = None
        self._loader = None

    def start(self, step: int) -> None:
        self.step = step
        sampler = _StreamSampler(self.size, self.seed, self.batch_size, self.rank, self.rank_batch, step)
        self._loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.rank_batch, sampler=sampler, num_workers=self.workers, pin_memory=self.pin,
            drop_last=True, generator=torch.Generator().manual_seed(self.seed),  # never touch the global RNG
            persistent_workers=False, prefetch_factor=4 if self.workers else None,
        )
        self._iterator = iter(self._loader)

    def next(self):
        self.step += 1
        try:
            return next(self._iterator)
        except UserError as exc:  # from a DataLoader worker: its message carries the worker's whole traceback
            raise UserError(_last_line(str(exc))) from None

    def state_dict(self) -> dict:
        return {"kind": "folder", "step": self.step, "position": self.step * self.batch_size, "epoch": self.step * self.batch_size // self.size}

    def load_state_dict(self, states: list, world: int) -> None:
        pass  # a pure function of the step, restored by start(step)

    def close(self) -> None:
        self._iterator = None  # shuts down the worker processes
        self._loader = None


def describe_synthesizer(synthesizer) -> str:
    parts = [type(synthesizer).__name__]
    generator = getattr(synthesizer, "generator", None)
    if getattr(generator, "name", None):
        parts.append(f"generator={generator.name}")
    for name in ("index", "sign", "shift"):
        value = getattr(synthesizer, name, None)
        if isinstance(value, (int, float)):
            parts.append(f"{name}={value:g}")
    rule = getattr(synthesizer, "rule", None)
    if rule is not None:
        parts.append(f"rule={getattr(rule, 'name', type(rule).__name__)}")
    return " ".join(parts)


def _draw_kept(synthesizer, generator: torch.Generator, count: int, chunk: int, buffer=None):
    """Draw until ``count`` kept pairs are available; returns (images, masks) CPU uint8 tensors and the rest."""
    images, masks = ([buffer[0]], [buffer[1]]) if buffer is not None else ([], [])
    have = sum(len(i) for i in images)
    empty_draws = 0
    while have < count:
        batch_images, batch_masks, keep = synthesizer.sample(chunk, generator)
        keep = torch.as_tensor(keep, dtype=torch.bool).cpu()
        if keep.any():
            images.append(torch.as_tensor(batch_images).cpu()[keep].to(torch.uint8))
            masks.append(torch.as_tensor(batch_masks).cpu()[keep].to(torch.uint8))
            have += int(keep.sum())
            empty_draws = 0
        else:
            empty_draws += 1
            if empty_draws >= 50:
                raise UserError(f"the mask rule kept none of {50 * chunk} synthetic pairs in a row: check --index and the rule options")
    images, masks = torch.cat(images), torch.cat(masks)
    return images[:count], masks[:count], (images[count:], masks[count:])


class SynthStream:
    """Batches of augmented pairs drawn on the fly; the state is the latent RNG and unused kept pairs."""

    def __init__(self, synthesizer, transform, *, seed, rank, rank_batch):
        self.synthesizer, self.transform = synthesizer, transform
        self.seed, self.rank, self.rank_batch = seed, rank, rank_batch
        self.generator = torch.Generator().manual_seed(_sample_seed(seed, 2, rank))
        self.buffer = None
        self.emitted = 0  # pairs handed out by this process: the augmentation seed counter
        self.size = None

    def start(self, step: int) -> None:
        pass

    def next(self):
        images, masks, self.buffer = _draw_kept(self.synthesizer, self.generator, self.rank_batch, self.rank_batch, self.buffer)
        out = []
        for image, mask in zip(images.numpy(), masks.numpy()):
            out.append(apply_transform(self.transform, image, mask, _sample_seed(self.seed, 3, self.rank, self.emitted)))
            self.emitted += 1
        return _stack(out)

    def state_dict(self) -> dict:
        return {"kind": "on-the-fly", "generator": self.generator.get_state(), "emitted": self.emitted,
                "buffer_images": self.buffer[0] if self.buffer else None, "buffer_masks": self.buffer[1] if self.buffer else None}

    def load_state_dict(self, states: list, world: int) -> None:
        if len(states) != world:
            raise UserError(f"--resume: the checkpoint was written by {len(states)} processes, this run has {world}; on-the-fly streams cannot be re-split")
        state = states[self.rank]
        self.generator.set_state(state["generator"])
        self.emitted = int(state["emitted"])
        self.buffer = (state["buffer_images"], state["buffer_masks"]) if state["buffer_images"] is not None else None

    def close(self) -> None:
        pass


def prepare_synth_val(synthesizer, transform, seed: int, count: int, chunk: int):
    generator = torch.Generator().manual_seed(_sample_seed(seed, 4))  # never overlaps the training latents' stream
    images, masks, _ = _draw_kept(synthesizer, generator, count, max(chunk, 16))
    return _stack([apply_transform(transform, i, m, seed=0) for i, m in zip(images.numpy(), masks.numpy())])


def _last_line(message: str) -> str:
    """The user's message inside a DataLoader worker's re-raised error (``...UserError: <message>``)."""
    last = message.strip().splitlines()[-1] if message.strip() else message
    return last.split("UserError: ", 1)[-1]
