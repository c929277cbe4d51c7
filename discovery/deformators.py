"""Deformators: the direction matrix of Voynov & Babenko (2020), in its five variants.

A deformator holds K latent directions. ``matrix()`` returns them as a (K, dim_z) tensor
whose row k is the latent shift of a unit step along direction k (column k of the paper's
matrix A). ``forward(indices, shifts)`` gives the shift ``eps_i * matrix()[k_i]`` for a batch,
which equals the paper's ``A(eps * e_k)``.

Variants (names as on the command line):
- ``linear``: a free K x dim_z matrix, initialised as the identity plus 0.1 N(0, 1) noise
  (the official code's ``random_init``), trained.
- ``projective``: the same parameter, each direction normalised to unit length before use,
  so the learned rows always have norm 1.
- ``ortho``: the first K rows of ``expm(S)`` for a skew-symmetric S = P - P^T, orthonormal by
  construction; needs K <= dim_z (the paper uses K = dim_z). The exponential is taken in
  float64 so orthonormality holds to ~1e-7 however far P moves.
- ``random``: K fixed random orthonormal directions (a baseline, not trained).
- ``identity``: the first K coordinate axes (a baseline, not trained).
"""

from __future__ import annotations

import torch
from torch import nn

from discovery.errors import UserError

DEFORMATOR_TYPES = ("linear", "projective", "ortho", "random", "identity")


class Deformator(nn.Module):
    """Base class; subclasses implement ``matrix()``."""

    kind: str = "base"

    def __init__(self, count: int, dim_z: int):
        super().__init__()
        self.count = int(count)
        self.dim_z = int(dim_z)

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def matrix(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, indices: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """Latent shifts (N, dim_z) for direction indices (N,) and shift amounts (N,)."""
        return self.matrix()[indices] * shifts.to(torch.float32)[:, None]


class LinearDeformator(Deformator):
    kind = "linear"

    def __init__(self, count: int, dim_z: int, random_init: bool = True, generator: torch.Generator | None = None):
        super().__init__(count, dim_z)
        weight = torch.zeros(count, dim_z)
        diagonal = min(count, dim_z)
        weight[:diagonal, :diagonal] = torch.eye(diagonal)
        if random_init:
            weight += 0.1 * torch.randn(count, dim_z, generator=generator)
        self.weight = nn.Parameter(weight)

    def matrix(self) -> torch.Tensor:
        return self.weight


class ProjectiveDeformator(LinearDeformator):
    kind = "projective"

    def matrix(self) -> torch.Tensor:
        return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)


class OrthoDeformator(Deformator):
    kind = "ortho"

    def __init__(self, count: int, dim_z: int, random_init: bool = True, generator: torch.Generator | None = None):
        super().__init__(count, dim_z)
        if count > dim_z:
            raise UserError(f"--directions {count}: the ortho deformator needs at most dim_z = {dim_z} directions")
        scale = 1.0 if random_init else 0.001  # the official code's two initial spreads
        self.log_mat_half = nn.Parameter(scale * torch.randn(dim_z, dim_z, generator=generator))

    def matrix(self) -> torch.Tensor:
        skew = (self.log_mat_half - self.log_mat_half.T).double()
        return torch.linalg.matrix_exp(skew)[: self.count].float()


class FixedDeformator(Deformator):
    """Directions given once and never trained (baselines, and ``measure_rca`` on any directions file)."""

    kind = "fixed"

    def __init__(self, matrix: torch.Tensor):
        super().__init__(*matrix.shape)
        self.register_buffer("directions", matrix.detach().float().clone())

    def matrix(self) -> torch.Tensor:
        return self.directions


class RandomDeformator(FixedDeformator):
    kind = "random"

    def __init__(self, count: int, dim_z: int, generator: torch.Generator | None = None):
        if count > dim_z:
            raise UserError(f"--directions {count}: random orthonormal directions need at most dim_z = {dim_z}")
        gaussian = torch.randn(dim_z, count, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        q = q * torch.sign(torch.diagonal(r))[None]  # Haar-distributed, independent of the QR sign convention
        super().__init__(q.T.float())


class IdentityDeformator(FixedDeformator):
    kind = "identity"

    def __init__(self, count: int, dim_z: int):
        if count > dim_z:
            raise UserError(f"--directions {count}: there are only dim_z = {dim_z} coordinate axes")
        super().__init__(torch.eye(dim_z)[:count])


def build_deformator(
    kind: str, count: int, dim_z: int, *, random_init: bool = True, generator: torch.Generator | None = None
) -> Deformator:
    """Build a deformator by name; ``generator`` seeds the initial (or fixed random) directions."""
    if kind not in DEFORMATOR_TYPES:
        raise UserError(f"--deformator {kind!r}: unknown (expected one of {', '.join(DEFORMATOR_TYPES)})")
    if count < 1:
        raise UserError(f"--directions {count}: must be at least 1")
    if kind == "linear":
        return LinearDeformator(count, dim_z, random_init, generator)
    if kind == "projective":
        return ProjectiveDeformator(count, dim_z, random_init, generator)
    if kind == "ortho":
        return OrthoDeformator(count, dim_z, random_init, generator)
    if kind == "random":
        return RandomDeformator(count, dim_z, generator)
    return IdentityDeformator(count, dim_z)
