"""The generator interface every method in the package talks to."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from discovery.errors import UserError


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


LATENT_SIZE_ATTRIBUTES = ("latent_shape", "dim_z", "z_dim", "nz", "latent_dim")
RANGE_TOLERANCE = 1.5  # |x| above this is not an image in [-1, 1] (small overshoots of un-clamped generators pass)


class WrappedGenerator(LatentGenerator):
    """Any ``nn.Module`` mapping z -> images in [-1, 1], made into a LatentGenerator.

    ``latent_shape`` is the shape one latent has for the module, e.g. ``(100, 1, 1)`` for the
    PyTorch-tutorial DCGAN; the package's methods always work on flat (N, dim_z) latents and the
    wrapper reshapes them on the way in.
    """

    def __init__(
        self,
        module: nn.Module,
        latent_shape: tuple[int, ...],
        resolution: int,
        name: str = "custom",
        latent_sampler: Callable[[int, torch.Generator | None], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.module = module
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.dim_z = int(math.prod(self.latent_shape))
        self.resolution = int(resolution)
        self.name = name
        self._latent_sampler = latent_sampler

    def sample_latent(self, n, generator=None):
        if self._latent_sampler is None:
            return super().sample_latent(n, generator)
        return self._latent_sampler(n, generator).reshape(n, self.dim_z).to(self.device)

    def forward(self, z, condition=None):
        return self.module(z.reshape(z.shape[0], *self.latent_shape))


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """The floating-point type of a module's weights (latents are cast to it)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def generate(generator, z: torch.Tensor, condition=None) -> torch.Tensor:
    """``G(z, condition)``, or ``G(z)`` for unconditional generators and plain modules."""
    return generator(z, condition) if condition is not None else generator(z)


def slice_condition(conditions, start: int, stop: int):
    """Rows start..stop of a condition: None, a tensor, or a list/tuple/dict of them."""
    if isinstance(conditions, torch.Tensor):
        return conditions[start:stop]
    if isinstance(conditions, (list, tuple)):
        return type(conditions)(slice_condition(c, start, stop) for c in conditions)
    if isinstance(conditions, dict):
        return {k: slice_condition(v, start, stop) for k, v in conditions.items()}
    return conditions


def device_for(device, generator) -> torch.device:
    """``device`` (a name or a torch.device), or the generator's own when None."""
    if device is None:
        return generator.device
    from discovery.runtime import resolve_device

    return resolve_device(device) if isinstance(device, str) else torch.device(device)


def probe_generator(generator: LatentGenerator, resolution: int | None = None, *, check_range: bool = True) -> int:
    """Run two latents through ``generator`` and check what comes out; return the image side.

    Images must be (N, 3, H, W) (or one grey channel), square, ``resolution`` pixels when that is
    given, finite and in [-1, 1]; each failure is one ``UserError`` saying what was wrong.
    """
    name = getattr(generator, "name", "custom")
    device = generator.device
    try:
        z = generator.sample_latent(2, torch.Generator().manual_seed(0)).to(device=device, dtype=parameter_dtype(generator))
        with torch.no_grad():
            images = generator(z, generator.sample_condition(2, torch.Generator().manual_seed(0)))
    except Exception as exc:  # the user's module: any failure here is a wrong latent shape or a broken module
        shape = getattr(generator, "latent_shape", (generator.dim_z,))
        raise UserError(f"generator {name!r}: the probe batch of latents (2, {', '.join(map(str, shape))}) failed "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); check latent_shape / dim_z") from None
    if not isinstance(images, torch.Tensor):
        raise UserError(f"generator {name!r}: forward returned {type(images).__name__}, expected an image tensor (N, 3, H, W)")
    if images.ndim != 4 or images.shape[0] != 2 or images.shape[1] not in (1, 3):
        raise UserError(f"generator {name!r}: forward returned shape {tuple(images.shape)} for 2 latents, expected (2, 3, H, W)")
    height, width = int(images.shape[2]), int(images.shape[3])
    if height != width:
        raise UserError(f"generator {name!r}: images are {height} x {width}, expected square images")
    if resolution is not None and height != int(resolution):
        raise UserError(f"generator {name!r}: images are {height} px but resolution={resolution} was given")
    if not torch.isfinite(images).all():
        raise UserError(f"generator {name!r}: the probe images hold NaN or infinite values")
    if check_range:
        low, high = float(images.min()), float(images.max())
        if low < -RANGE_TOLERANCE or high > RANGE_TOLERANCE:
            raise UserError(f"generator {name!r}: images span [{low:.3g}, {high:.3g}], expected values in [-1, 1] "
                            "(rescale the output, e.g. x * 2 - 1 for images in [0, 1])")
    return height


def wrap_generator(
    module: nn.Module,
    dim_z: int | None = None,
    resolution: int | None = None,
    *,
    latent_shape: tuple[int, ...] | None = None,
    name: str = "custom",
    latent_sampler=None,
    check_range: bool = True,
) -> WrappedGenerator:
    """Wrap a plain ``nn.Module`` (z -> images in [-1, 1]) so every method and command can use it.

    Give the latent size as ``dim_z`` (flat latents) or ``latent_shape`` (e.g. ``(100, 1, 1)``).
    The module is put in eval mode with gradients off (so batch-norm statistics are never
    rewritten), and one probe batch checks the output's shape, resolution and range before any
    run starts; ``resolution`` defaults to what the probe sees. Example::

        G = wrap_generator(dcgan_netG, latent_shape=(100, 1, 1))
        directions = discovery.discover(G, method="sefa", out="runs/dcgan")
    """
    if not isinstance(module, nn.Module):
        raise UserError(f"generator {name!r}: expected a torch.nn.Module, got {type(module).__name__}")
    if latent_shape is None:
        if dim_z is None:
            raise UserError(f"generator {name!r}: give its latent size (dim_z=... or latent_shape=(...))")
        latent_shape = (int(dim_z),)
    elif dim_z is not None and int(dim_z) != math.prod(latent_shape):
        raise UserError(f"generator {name!r}: dim_z {dim_z} does not match latent_shape {tuple(latent_shape)}")
    if any(int(s) < 1 for s in latent_shape):
        raise UserError(f"generator {name!r}: latent_shape {tuple(latent_shape)} must be positive sizes")
    module.eval().requires_grad_(False)
    wrapped = WrappedGenerator(module, latent_shape, resolution or 0, name=name, latent_sampler=latent_sampler)
    wrapped.resolution = probe_generator(wrapped, resolution, check_range=check_range)
    return wrapped


def as_latent_generator(made, name: str = "custom") -> LatentGenerator:
    """What a plugin factory returned, as a checked LatentGenerator."""
    if isinstance(made, LatentGenerator):
        made.name = name
        made.eval().requires_grad_(False)
        probe_generator(made, getattr(made, "resolution", None))
        return made
    if isinstance(made, nn.Module):
        for attribute in LATENT_SIZE_ATTRIBUTES:
            value = getattr(made, attribute, None)
            if value is None:
                continue
            shape = tuple(value) if isinstance(value, (tuple, list, torch.Size)) else (int(value),)
            return wrap_generator(made, latent_shape=shape, resolution=getattr(made, "resolution", None), name=name)
        raise UserError(f"generator {name!r}: the factory returned a {type(made).__name__} without a latent size; "
                        f"set one of {', '.join(LATENT_SIZE_ATTRIBUTES)} on it or return discovery.wrap_generator(...)")
    raise UserError(f"generator {name!r}: the factory returned {type(made).__name__}, expected an nn.Module or a LatentGenerator")
