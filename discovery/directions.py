"""``directions.pt``: the one artefact every discovery method writes and every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from discovery.errors import UserError

FORMAT = "saliency.directions/1"


@dataclass
class Directions:
    """K latent directions of one generator.

    ``matrix`` is (K, dim_z); row k is the latent shift of one unit along direction k, so
    ``z + t * matrix[k]`` moves a latent by ``t`` along it. ``shift_scale`` is the typical
    shift magnitude for that method (charts span +/- it). ``stats`` holds per-direction
    numbers (accuracy, eigenvalues, background scores: lists of length K) and ``manifest``
    says how the file was made.
    """

    matrix: torch.Tensor
    generator: str
    method: str
    shift_scale: float = 6.0
    stats: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    generator_options: dict = field(default_factory=dict)  # e.g. classes, truncation, weights path

    def __post_init__(self):
        self.matrix = self.matrix.detach().float().cpu()
        if self.matrix.ndim != 2:
            raise ValueError(f"directions matrix must be (K, dim_z), got {tuple(self.matrix.shape)}")

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

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "directions": self.matrix,
            "generator": self.generator,
            "method": self.method,
            "shift_scale": float(self.shift_scale),
            "stats": self.stats,
            "manifest": self.manifest,
            "generator_options": self.generator_options,
        }

    def save(self, path: str | Path) -> None:
        from discovery.io import atomic_torch_save

        atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> "Directions":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"--directions {path}: file not found (expected a directions.pt written by `saliency discover`)")
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # any unreadable file is the user's to fix, not a traceback
            raise UserError(f"--directions {path}: not a readable directions file ({type(exc).__name__})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"--directions {path}: not a directions file (expected format {FORMAT!r})")
        return cls(
            matrix=data["directions"],
            generator=data["generator"],
            method=data["method"],
            shift_scale=data.get("shift_scale", 6.0),
            stats=data.get("stats", {}),
            manifest=data.get("manifest", {}),
            generator_options=data.get("generator_options", {}),
        )


def canonical_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row so its largest-magnitude component is positive (eigenvectors and PCA axes have no sign)."""
    index = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors.gather(1, index[:, None])).squeeze(1)
    signs[signs == 0] = 1
    return vectors * signs[:, None]


def load_directions(path: str | Path) -> Directions:
    """One call for users: ``load_directions("runs/x/directions.pt").matrix`` is the (K, dim_z) tensor."""
    return Directions.load(path)
