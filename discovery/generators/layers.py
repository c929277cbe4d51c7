"""Building blocks shared by the BigGAN-family generators (inference only).

Two spectral-norm checkpoint layouts exist in the wild and both are read here:

* ``torch`` layout (``torch.nn.utils.spectral_norm``, used by the pytorch-pretrained-BigGAN
  conversion of BigGAN-deep): parameter ``weight_orig`` and buffers ``weight_u`` (out,) and
  ``weight_v`` (in * k * k,). In eval mode torch divides by ``sigma = u . (W v)`` without a
  power-iteration step.
* ``brock`` layout (the BigGAN-PyTorch code base: BigGAN, BigBiGAN conversions): parameter
  ``weight`` and buffers ``u0`` (1, out) and ``sv0`` (1,). Its forward runs one power-iteration
  step from the stored ``u0`` (without storing the result in eval mode) and divides by the
  singular value that step gives; ``sv0`` is a logging value and never used.

The models are eval-only, so the normalised weight is computed once, when the layer is built or
loaded, and kept in a non-persistent buffer ``weight_sn``: ``.to(device / dtype /
memory_format)`` moves it along, the state dict keeps the published key names, and a forward
pass is a plain convolution (which also keeps ``torch.compile`` graphs free of SN arithmetic).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

LAYOUTS = ("torch", "brock")


class SpectralNormLayer(nn.Module):
    """Base of ``SNConv2d`` and ``SNLinear``: holds the raw weight in one of the two layouts."""

    def __init__(self, weight_shape: tuple[int, ...], bias: bool, eps: float, layout: str):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}")
        self.layout = layout
        self.eps = eps
        out_features = weight_shape[0]
        in_flat = math.prod(weight_shape[1:])
        if layout == "torch":
            # Registration order follows torch.nn.utils.spectral_norm's state dict: bias, weight_orig, u, v.
            self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
            self.weight_orig = nn.Parameter(torch.empty(weight_shape))
            self.register_buffer("weight_u", torch.zeros(out_features))
            self.register_buffer("weight_v", torch.zeros(in_flat))
        else:
            self.weight = nn.Parameter(torch.empty(weight_shape))
            self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
            self.register_buffer("u0", torch.zeros(1, out_features))
            self.register_buffer("sv0", torch.ones(1))
        # The raw weight stays uninitialised (touching 200 MB of fresh memory costs seconds on a
        # small machine) until a checkpoint is loaded or initialize_random is called; weight_sn is
        # empty until then, so an unloaded layer cannot silently compute with garbage.
        self.register_buffer("weight_sn", torch.empty(0), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, incompatible: module.refresh())

    # -- raw weight access ------------------------------------------------------------------
    @property
    def raw_weight(self) -> torch.Tensor:
        return self.weight_orig if self.layout == "torch" else self.weight

    @torch.no_grad()
    def sigma(self) -> torch.Tensor:
        """The divisor the original code uses in eval mode (float32 scalar)."""
        w = self.raw_weight.detach().float().reshape(self.raw_weight.shape[0], -1)
        if self.layout == "torch":
            return torch.dot(self.weight_u.float(), w @ self.weight_v.float())
        u = self.u0.float()
        v = F.normalize(u @ w, eps=self.eps)
        u = F.normalize(v @ w.t(), eps=self.eps)
        return ((v @ w.t()) @ u.t()).squeeze()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute ``weight_sn`` from the raw weight and the stored singular vectors."""
        if self.raw_weight.is_meta:
            return
        sigma = self.sigma()
        if not torch.isfinite(sigma) or sigma == 0:
            raise FloatingPointError(f"spectral norm of a {tuple(self.raw_weight.shape)} weight is {float(sigma)}")
        weight = self.raw_weight.detach().float() / sigma
        self.weight_sn = weight.to(dtype=self.raw_weight.dtype, device=self.raw_weight.device).contiguous(
            memory_format=_memory_format_of(self.raw_weight)
        )

    @torch.no_grad()
    def reset_random(self, generator: torch.Generator, std: float = 0.02, power_iterations: int = 3) -> None:
        """Seeded random weights and singular vectors from a few power-iteration steps (tests, benchmarks)."""
        if self.raw_weight.is_meta:
            return
        weight = torch.randn(self.raw_weight.shape, generator=generator) * std
        self.raw_weight.copy_(weight)
        if self.bias is not None:
            self.bias.copy_(torch.randn(self.bias.shape, generator=generator) * std)
        w = weight.reshape(weight.shape[0], -1)
        u = F.normalize(torch.randn(w.shape[0], generator=generator), dim=0)
        for _ in range(power_iterations):
            v = F.normalize(w.t() @ u, dim=0, eps=1e-12)
            u = F.normalize(w @ v, dim=0, eps=1e-12)
        if self.layout == "torch":
            self.weight_u.copy_(u)
            self.weight_v.copy_(v)
        else:
            self.u0.copy_(u[None])
            self.sv0.fill_(float(u @ (w @ v)))
        self.refresh()


def _memory_format_of(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class SNConv2d(SpectralNormLayer):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 0, bias: bool = True, eps: float = 1e-12, layout: str = "torch"):
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), bias, eps, layout)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight_sn, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return f"{tuple(self.raw_weight.shape)}, padding={self.padding}, layout={self.layout}"


class SNLinear(SpectralNormLayer):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, eps: float = 1e-12, layout: str = "torch"):
        super().__init__((out_features, in_features), bias, eps, layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_sn, self.bias)

    def extra_repr(self) -> str:
        return f"{tuple(self.raw_weight.shape)}, layout={self.layout}"


def spectral_norm_layers(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, SpectralNormLayer)]


def self_attention(x: torch.Tensor, theta: nn.Module, phi: nn.Module, g: nn.Module, o: nn.Module, gamma: torch.Tensor) -> torch.Tensor:
    """SA-GAN non-local block as both BigGAN code bases compute it (phi and g max-pooled 2x2).

    The attention logits and softmax run in float32 so half-precision inference cannot overflow.
    """
    n, c, h, w = x.shape
    query = theta(x).reshape(n, c // 8, h * w)
    key = F.max_pool2d(phi(x), 2).reshape(n, c // 8, h * w // 4)
    value = F.max_pool2d(g(x), 2).reshape(n, c // 2, h * w // 4)
    attention = torch.softmax(torch.bmm(query.transpose(1, 2).float(), key.float()), dim=-1).to(x.dtype)
    out = torch.bmm(value, attention.transpose(1, 2)).reshape(n, c // 2, h, w)
    return x + gamma.to(x.dtype) * o(out)


def conditional_batch_norm(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * gain + bias with per-sample gain and bias (N, C).

    Folded into one multiply-add per element; the per-channel factors are formed in float32.
    """
    scale = gain.float() * torch.rsqrt(var.float() + eps)
    shift = bias.float() - mean.float() * scale
    return torch.addcmul(shift.to(x.dtype)[:, :, None, None], x, scale.to(x.dtype)[:, :, None, None])


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def truncated_normal(n: int, dim: int, truncation: float = 1.0, bound: float = 2.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """truncation * z with z ~ N(0, 1) truncated to [-bound, bound] (scipy.stats.truncnorm(-2, 2)),
    drawn by inverse-CDF from a torch generator on the CPU so seeds reproduce across machines."""
    low = 0.5 * (1 + math.erf(-bound / math.sqrt(2)))
    high = 1 - low
    uniform = low + (high - low) * torch.rand(n, dim, generator=generator, dtype=torch.float64)
    z = torch.special.ndtri(uniform).clamp_(-bound, bound)
    return (truncation * z).float()


# -- loading ------------------------------------------------------------------------------------


def initialize_random(module: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Seeded random weights for every spectral-norm layer of ``module`` (tests, benchmarks).

    Other parameters (embeddings, batch-norm gains, attention gamma) are set by the owning
    model's ``initialize_random``; this only handles the spectral-norm layers.
    """
    generator = torch.Generator().manual_seed(seed)
    for layer in spectral_norm_layers(module):
        layer.reset_random(generator, std=std)
    return module


def derive_spectral_v(weight_orig: torch.Tensor, u: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The ``weight_v`` a torch-layout spectral-norm file lacks.

    Files written before torch kept ``v`` store the normalised ``weight`` instead; torch's own
    loader then solves ``W v = u`` (least squares) and rescales v so that ``u . (W v)`` is the
    stored ratio ``sigma = weight_orig / weight``, which makes eval-mode outputs equal the
    stored weight's. Without ``weight`` either, the half power-iteration step ``v = normalize(W^T u)``
    is the best available (torch itself would leave v random).
    """
    matrix = weight_orig.double().reshape(weight_orig.shape[0], -1)
    u = u.double()
    if weight is None:
        return F.normalize(matrix.t() @ u, dim=0, eps=1e-12).float()
    # the ratio weight_orig / weight, as a least-squares fit (torch's elementwise mean is NaN where both are 0)
    sigma = (weight_orig.double() * weight.double()).sum() / weight.double().square().sum().clamp_min(1e-30)
    # v = pinv(W) u, through the smaller Gram matrix (torch forms W^T W, which is (in*k*k)^2)
    if matrix.shape[0] <= matrix.shape[1]:
        v = matrix.t() @ (torch.linalg.pinv(matrix @ matrix.t()) @ u)
    else:
        v = torch.linalg.pinv(matrix.t() @ matrix) @ (matrix.t() @ u)
    return (v * (sigma / torch.dot(u, matrix @ v))).float()


def load_generator_state(module: nn.Module, path: str | Path, expected: str, optional_suffixes: Iterable[str] = ()) -> list[str]:
    """Load a checkpoint file into ``module`` exactly (see ``load_state_dict_strict``).

    Keys ending in one of ``optional_suffixes`` may be absent (they keep the module's values);
    the list of those absent is returned. A ``module.`` prefix (DataParallel) is stripped, and
    non-finite values are refused. Every failure is a one-line ``UserError``.
    """
    from discovery.checkpoints import load_state_dict_strict, read_checkpoint
    from discovery.errors import UserError

    state = read_checkpoint(path, expected)
    if "state_dict" in state and isinstance(state["state_dict"], dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        state = state["state_dict"]
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise UserError(f"{path}: entry {not_tensors[0]!r} is not a tensor (expected {expected})")
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise UserError(f"{path}: {key} holds NaN or infinite values; the file is corrupt")
    own = module.state_dict()
    suffixes = tuple(optional_suffixes)
    optional = [k for k in own if suffixes and k.endswith(suffixes)]
    absent = [k for k in optional if k not in state]
    state = dict(state)
    for key, value in state.items():
        # One-element scalars (attention gamma) come as shape () or (1,) depending on the converter;
        # torch's own loader accepts either, and so do we.
        if key in own and value.numel() == 1 and own[key].numel() == 1 and value.shape != own[key].shape:
            state[key] = value.reshape(own[key].shape)
    derived = 0
    for key in absent:
        prefix = key[: -len("weight_v")]
        if key.endswith(".weight_v") and prefix + "weight_orig" in state and prefix + "weight_u" in state:
            try:
                state[key] = derive_spectral_v(state[prefix + "weight_orig"], state[prefix + "weight_u"], state.pop(prefix + "weight", None))
                derived += 1
            except RuntimeError:
                pass  # inconsistent shapes: the strict comparison below reports them
    if derived:
        from discovery.runtime import get_logger

        get_logger("generators").info(f"{path}: {derived} spectral-norm layers have no weight_v; derived as torch's spectral-norm loader does")
    try:
        load_state_dict_strict(module, state, expected=expected, optional_keys=optional)
    except UserError as exc:
        raise UserError(f"{path}: {str(exc).removeprefix('state dict: ')}") from None
    except (FloatingPointError, RuntimeError) as exc:
        raise UserError(f"{path}: cannot use these weights ({str(exc).splitlines()[0]}); expected {expected}") from None
    return absent
