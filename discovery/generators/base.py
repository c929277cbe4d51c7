"""The generator interface every method in the package talks to."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class LatentGenerator(nn.Module):
    """A generator adapter: latents z (and, for conditional models, a condition) -> images in [-1, 1].

    Subclasses set ``dim_z`` and ``resolution`` and implement ``forward(z, condition=None)``.
    A condition (class labels for BigGAN) is drawn once per latent by ``sample_condition`` and
    passed unchanged to ``G(z, c)`` and ``G(z + shift, c)``, so a shift only moves z.
    """

    dim_z: int
    resolution: int
    conditional: bool = False
    name: str = "custom"

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I), drawn on the CPU from ``generator`` (so seeds agree across devices)."""
        return torch.randn(n, self.dim_z, generator=generator).to(self.device)

    def sample_condition(self, n: int, generator: torch.Generator | None = None):
        """The condition for n latents; None for unconditional generators."""
        return None

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "dim_z": self.dim_z,
            "resolution": self.resolution,
            "conditional": self.conditional,
        }


class WrappedGenerator(LatentGenerator):
    """Any ``nn.Module`` mapping z -> images in [-1, 1], made into a LatentGenerator."""

    def __init__(
        self,
        module: nn.Module,
        dim_z: int,
        resolution: int,
        name: str = "custom",
        latent_sampler: Callable[[int, torch.Generator | None], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.module = module
        self.dim_z = int(dim_z)
        self.resolution = int(resolution)
        self.name = name
        self._latent_sampler = latent_sampler

    def sample_latent(self, n, generator=None):
        if self._latent_sampler is None:
            return super().sample_latent(n, generator)
        return self._latent_sampler(n, generator).to(self.device)

    def forward(self, z, condition=None):
        return self.module(z)


def wrap_generator(module: nn.Module, dim_z: int, resolution: int, name: str = "custom", latent_sampler=None) -> WrappedGenerator:
    """Wrap a plain ``nn.Module`` (z -> images in [-1, 1]) so every command can use it.

    Example::

        G = wrap_generator(my_stylegan.mapping_and_synthesis, dim_z=512, resolution=256)
        directions = discover_voynov(G, steps=20000)
    """
    return WrappedGenerator(module, dim_z, resolution, name=name, latent_sampler=latent_sampler)
