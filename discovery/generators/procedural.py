"""A procedural generator whose latent factors are known: ground truth for discovery tests.

An image is a soft disc on a flat background. Five orthonormal directions of z (a fixed
random basis, so they are *not* the coordinate axes) control object x and y position,
object hue, background brightness and object size; the remaining latent directions have no
effect. ``factor_directions`` exposes the true directions, which lets tests measure how well
a method recovers them.
"""

from __future__ import annotations

import math

import torch

from discovery.generators.base import LatentGenerator
from discovery.generators.registry import register_generator

FACTORS = ("x_position", "y_position", "object_hue", "background_brightness", "object_size")


class ProceduralGenerator(LatentGenerator):
    def __init__(self, dim_z: int = 8, resolution: int = 32, basis_seed: int = 0, edge: float = 0.04):
        super().__init__()
        if dim_z < len(FACTORS):
            raise ValueError(f"dim_z must be at least {len(FACTORS)}")
        self.dim_z = dim_z
        self.resolution = resolution
        self.edge = edge
        gaussian = torch.randn(dim_z, dim_z, generator=torch.Generator().manual_seed(basis_seed), dtype=torch.float64)
        basis, _ = torch.linalg.qr(gaussian)
        self.register_buffer("basis", basis.T.contiguous().float())  # rows: orthonormal directions of z
        axis = torch.linspace(-1, 1, resolution)
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        self.register_buffer("grid", torch.stack([xx, yy]))

    @property
    def factor_directions(self) -> dict[str, torch.Tensor]:
        """Unit vectors in z that move each known factor."""
        return {name: self.basis[i].clone() for i, name in enumerate(FACTORS)}

    def factors(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.basis[: len(FACTORS)].T

    def forward(self, z, condition=None):
        f = self.factors(z)
        cx, cy = 0.45 * torch.tanh(f[:, 0] / 2), 0.45 * torch.tanh(f[:, 1] / 2)
        hue = f[:, 2]
        background = 0.8 * torch.tanh(f[:, 3] / 2)
        radius = 0.32 + 0.14 * torch.tanh(f[:, 4] / 2)
        dx = self.grid[0][None] - cx[:, None, None]
        dy = self.grid[1][None] - cy[:, None, None]
        distance = torch.sqrt(dx**2 + dy**2 + 1e-8)
        mask = torch.sigmoid((radius[:, None, None] - distance) / self.edge)[:, None]
        phases = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], device=z.device)
        colour = 0.8 * torch.cos(hue[:, None] + phases[None])[:, :, None, None]
        backdrop = background[:, None, None, None].expand(-1, 3, 1, 1)
        return mask * colour + (1 - mask) * backdrop


@register_generator("procedural", description="Soft disc on a flat background; 5 known latent factors (tests, quick runs)")
def build_procedural(weights=None, dim_z: int = 8, resolution: int = 32):
    return ProceduralGenerator(dim_z=dim_z, resolution=resolution)
