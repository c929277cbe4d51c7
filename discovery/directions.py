"""``directions.pt``: the one artefact every discovery method writes and every later stage reads."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from discovery.errors import UserError

FORMAT = "saliency.directions/1"


def plain(value):
    """``value`` as plain JSON types (what ``torch.load(weights_only=True)`` reads back)."""
    from discovery.io import _json_default

    return json.loads(json.dumps(value, default=_json_default, allow_nan=True))


@dataclass
class Directions:
    """K latent directions of one generator.

    ``matrix`` is (K, dim_z); row k is the latent shift of one unit along direction k, so
    ``z + t * matrix[k]`` moves a latent by ``t`` along it. ``shift_scale`` is the typical
    shift magnitude for that method (charts span +/- it). ``stats`` holds per-direction
    numbers (accuracy, eigenvalues, background scores: lists of length K) and ``manifest``
    says how the file was made. ``background`` is the one background-direction decision
    (index, the sign that dims the background, where it came from), made by
    ``discovery.background`` or by a person, and travels with the file. ``labels`` names
    directions ({index: "zoom"}).
    """

    matrix: torch.Tensor
    generator: str
    method: str
    shift_scale: float = 6.0
    stats: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    generator_options: dict = field(default_factory=dict)  # e.g. classes, truncation, weights path
    background: dict | None = None  # {"index": k, "sign": +1/-1 (dims the background), "source": ..., "score": ...}
    labels: dict = field(default_factory=dict)  # {index: name}

    def __post_init__(self):
        self.matrix = torch.as_tensor(self.matrix).detach().float().cpu()
        if self.matrix.ndim != 2 or self.matrix.shape[0] < 1 or self.matrix.shape[1] < 1:
            raise UserError(f"directions matrix must be (K, dim_z), got {tuple(self.matrix.shape)}")
        if not torch.isfinite(self.matrix).all():
            raise UserError("the directions matrix holds NaN or infinite values")
        if not (isinstance(self.shift_scale, (int, float)) and math.isfinite(self.shift_scale) and self.shift_scale > 0):
            raise UserError(f"shift_scale {self.shift_scale!r}: must be a positive number")
        self.labels = {int(k): str(v) for k, v in (self.labels or {}).items()}

    @property
    def count(self) -> int:
        return self.matrix.shape[0]

    @property
    def dim_z(self) -> int:
        return self.matrix.shape[1]

    def direction(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.count:
            raise UserError(f"--index {index}: out of range, the file has {self.count} directions (0..{self.count - 1})")
        return self.matrix[index]

    def shift(self, z: torch.Tensor, index: int, amount: float | torch.Tensor) -> torch.Tensor:
        """z + amount * direction(index); ``amount`` is a scalar or one value per latent."""
        d = self.direction(index).to(z.device, z.dtype)
        amount = torch.as_tensor(amount, device=z.device, dtype=z.dtype)
        return z + amount.reshape(-1, 1) * d if amount.ndim else z + amount * d

    def set_background(self, index: int, sign: int, source: str, score: float | None = None) -> None:
        """Record the background direction and the shift sign that dims the background."""
        self.direction(index)
        if int(sign) not in (1, -1):
            raise UserError(f"background sign {sign!r}: must be 1 or -1")
        self.background = {"index": int(index), "sign": int(sign), "source": str(source),
                           "score": None if score is None else float(score)}

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "directions": self.matrix,
            "generator": self.generator,
            "method": self.method,
            "shift_scale": float(self.shift_scale),
            "stats": plain(self.stats),
            "manifest": plain(self.manifest),
            "generator_options": plain(self.generator_options),
            "background": plain(self.background),
            "labels": {str(k): v for k, v in self.labels.items()},
        }

    def save(self, path: str | Path) -> None:
        from discovery.io import atomic_torch_save

        atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path, generator: str | None = None) -> "Directions":
        """Read ``directions.pt`` or any imported format (``discovery.direction_formats``); never unpickles.

        ``generator`` names the generator of a foreign file (which does not say); for this
        package's own files it must agree with the recorded one.
        """
        from discovery.direction_formats import import_directions

        directions = import_directions(path, generator)
        if generator and directions.generator != generator and not directions.manifest.get("imported_from"):
            from discovery.generators.registry import canonical_name

            if canonical_name(generator) != directions.generator:
                raise UserError(f"--generator {generator}: {path} holds directions of {directions.generator!r}")
        return directions


_KEYS = {"format", "directions", "generator", "method", "shift_scale", "stats", "manifest", "generator_options", "background", "labels"}


def directions_from_dict(data: dict, path) -> Directions:
    """A native ``directions.pt`` dict, checked field by field (one line per problem)."""
    where = f"--directions {path}"
    unknown = set(map(str, data)) - _KEYS
    if unknown:
        raise UserError(f"{where}: unknown entries {sorted(unknown)} in a {FORMAT} file")
    matrix = data.get("directions")
    if not isinstance(matrix, torch.Tensor):
        raise UserError(f"{where}: the 'directions' entry is {type(matrix).__name__}, expected a (K, dim_z) tensor")
    for key in ("generator", "method"):
        if not isinstance(data.get(key), str):
            raise UserError(f"{where}: the {key!r} entry is missing or not a string")
    for key in ("stats", "manifest", "generator_options", "labels"):
        if not isinstance(data.get(key, {}), dict):
            raise UserError(f"{where}: the {key!r} entry is {type(data[key]).__name__}, expected a dict")
    background = data.get("background")
    if background is not None and not (isinstance(background, dict) and isinstance(background.get("index"), int)
                                       and background.get("sign") in (1, -1)):
        raise UserError(f"{where}: the 'background' entry must be {{'index': int, 'sign': 1 or -1, ...}}, got {background!r}")
    try:
        directions = Directions(
            matrix=matrix,
            generator=data["generator"],
            method=data["method"],
            shift_scale=float(data.get("shift_scale", 6.0)),
            stats=data.get("stats", {}),
            manifest=data.get("manifest", {}),
            generator_options=data.get("generator_options", {}),
            labels=data.get("labels", {}),
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    if background is not None:
        if not 0 <= background["index"] < directions.count:
            raise UserError(f"{where}: background index {background['index']} is outside 0..{directions.count - 1}")
        directions.background = dict(background)
    return directions


def canonical_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row so its largest-magnitude component is positive (eigenvectors and PCA axes have no sign)."""
    index = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors.gather(1, index[:, None])).squeeze(1)
    signs[signs == 0] = 1
    return vectors * signs[:, None]


def load_directions(path: str | Path, generator: str | None = None) -> Directions:
    """One call for users: ``load_directions("runs/x/directions.pt").matrix`` is the (K, dim_z) tensor.

    Imported formats (a plain vector or matrix, a GANLatentDiscovery deformator, GANSpace .npz)
    carry no generator name: pass ``generator``."""
    return Directions.load(path, generator)
