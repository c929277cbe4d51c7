"""ImageNet-1k class names and the ``--classes`` option of class-conditional generators.

Class names are torchvision's (``ResNet50_Weights.IMAGENET1K_V1.meta["categories"]``), which
ship with torchvision and need no download; they are unique ("crane bird" 134, "crane" 517).
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Iterable

import torch

from discovery.errors import UserError

NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names, index order."""
    from torchvision.models import ResNet50_Weights

    names = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    assert len(names) == NUM_CLASSES
    return names


def _normalise(name: str) -> str:
    return " ".join(name.replace("_", " ").strip().lower().split())


@functools.lru_cache(maxsize=1)
def _index_by_name() -> dict[str, int]:
    return {_normalise(name): i for i, name in enumerate(class_names())}


def class_index(name: str) -> int:
    """Index of an ImageNet class name (case-insensitive; '_' may stand for ' ')."""
    key = _normalise(name)
    table = _index_by_name()
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, table, n=3, cutoff=0.75)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; give an index 0-999 or a name as in torchvision's ImageNet categories"
    raise UserError(f"--classes {name!r}: unknown ImageNet class{hint}")


def class_name(index: int) -> str:
    return class_names()[index]


def parse_classes(spec, num_classes: int = NUM_CLASSES, names: bool = True) -> list[int] | None:
    """Turn a ``--classes`` value into a list of class indices in the given order (duplicates
    kept, so a class listed twice is drawn twice as often), or None for 'all'.

    Accepted: None or 'all' (uniform over the 1000 classes); an int; a string of comma-separated
    items, each an index (``207``), an index range (``151-268``), or a class name
    (``golden retriever``); or a sequence of ints / names. ``num_classes`` and ``names=False``
    serve other conditional generators (a StyleGAN pickle's dataset labels have indices only).
    """
    kind = "ImageNet indices or names" if names else f"label indices 0-{num_classes - 1}"
    if spec is None:
        return None
    if isinstance(spec, bool):
        raise UserError(f"--classes {spec!r}: expected {kind}, or 'all'")
    if isinstance(spec, int):
        items: Iterable = [spec]
    elif isinstance(spec, str):
        if spec.strip().lower() == "all":
            return None
        items = [item for item in spec.split(",")]
    elif isinstance(spec, (list, tuple)) or (isinstance(spec, torch.Tensor) and spec.dim() == 1):
        items = [int(x) if isinstance(x, torch.Tensor) else x for x in spec]
    else:
        raise UserError(f"--classes {spec!r}: expected {kind}, or 'all'")
    indices: list[int] = []
    for item in items:
        if isinstance(item, str):
            text = item.strip()
            if not text:
                raise UserError(f"--classes {spec!r}: empty item")
            if text.lower() == "all":
                return None
            if re.fullmatch(r"\d+", text):
                indices.append(_check_index(int(text), spec, num_classes))
            elif m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", text):
                lo, hi = _check_index(int(m[1]), spec, num_classes), _check_index(int(m[2]), spec, num_classes)
                if lo > hi:
                    raise UserError(f"--classes {text!r}: empty range")
                indices.extend(range(lo, hi + 1))
            elif names:
                indices.append(class_index(text))
            else:
                raise UserError(f"--classes {spec!r}: {text!r} is not a label index (expected {kind})")
        elif isinstance(item, int) and not isinstance(item, bool):
            indices.append(_check_index(item, spec, num_classes))
        else:
            raise UserError(f"--classes {spec!r}: {item!r} is neither an index nor a class name")
    if not indices:
        raise UserError(f"--classes {spec!r}: no class given")
    return indices


def _check_index(index: int, spec, num_classes: int = NUM_CLASSES) -> int:
    if not 0 <= index < num_classes:
        raise UserError(f"--classes {spec!r}: index {index} is outside 0-{num_classes - 1}")
    return index


class ClassPolicy:
    """Which classes a conditional generator draws: a fixed list (uniform over it) or all 1000."""

    def __init__(self, spec=None, num_classes: int = NUM_CLASSES, names: bool = True):
        self.spec = spec
        self.num_classes = num_classes
        self.indices = parse_classes(spec, num_classes, names)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n class indices (int64, CPU) drawn from ``generator``."""
        if self.indices is None:
            return torch.randint(0, self.num_classes, (n,), generator=generator)
        if len(self.indices) == 1:
            return torch.full((n,), self.indices[0], dtype=torch.int64)
        pick = torch.randint(0, len(self.indices), (n,), generator=generator)
        return torch.tensor(self.indices, dtype=torch.int64)[pick]

    def describe(self) -> str | list[int]:
        return "all" if self.indices is None else list(self.indices)

    def __repr__(self) -> str:
        return f"ClassPolicy({self.describe()!r})"


def as_class_condition(condition, n: int, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Validate a condition passed to a conditional generator: int64 indices (n,) or float
    class weights (n, num_classes) such as one-hot vectors or mixtures."""
    if not isinstance(condition, torch.Tensor):
        condition = torch.as_tensor(condition)
    if condition.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        if condition.dim() == 0:
            condition = condition.expand(n)
        if condition.shape != (n,):
            raise ValueError(f"class indices must have shape ({n},), got {tuple(condition.shape)}")
        return condition.long()
    if condition.dim() != 2 or condition.shape != (n, num_classes):
        raise ValueError(f"class weights must have shape ({n}, {num_classes}), got {tuple(condition.shape)}")
    return condition
