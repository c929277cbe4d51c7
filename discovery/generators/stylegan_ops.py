"""The few image operations StyleGAN2 and StyleGAN3 are built from, in plain PyTorch.

NVlabs ship CUDA kernels for these (upfirdn2d, bias_act, filtered_lrelu) with slow reference
paths beside them; the operations are written here once, from their definitions, so they run on
any device and in any precision without compiling anything. Conventions follow the papers' code
so that the stored weights and filters mean the same thing: a filter is applied as a convolution
(flipped) unless ``flip_filter``, paddings are ``[x_before, x_after, y_before, y_after]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def lrelu_gain_clamp(x: torch.Tensor, *, slope: float = LRELU_SLOPE, gain: float = LRELU_GAIN, clamp: float | None = None):
    """Leaky ReLU, then a gain, then clamping to [-clamp, clamp]: StyleGAN's activation."""
    if slope != 1:
        x = F.leaky_relu(x, slope)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def add_bias(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Add a per-channel bias to (N, C, ...) activations."""
    if bias is None:
        return x
    return x + bias.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, *, up: int = 1, down: int = 1, padding=(0, 0, 0, 0),
              gain: float = 1.0, flip_filter: bool = False) -> torch.Tensor:
    """Upsample by inserting zeros, pad (or crop, for negative padding), FIR-filter, downsample by striding.

    ``f`` is a 2-D filter or a 1-D one applied separably (then ``gain`` is split over both passes).
    Computed without the zeros and the dropped samples: upsampling is a transposed convolution
    (polyphase) and downsampling a strided one, which gives the same numbers as the definition
    at a fraction of the work on CPU.
    """
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    channels = x.shape[1]
    f = (f * (gain ** (f.ndim / 2))).to(device=x.device, dtype=x.dtype)
    kernel = f.flip(list(range(f.ndim))) if flip_filter else f  # as a true convolution kernel
    px0, px1, py0, py1 = padding
    if kernel.ndim == 1:
        x = _fir_along(x, kernel, up, down, px0, px1, axis=3)
        return _fir_along(x, kernel, up, down, py0, py1, axis=2)
    kh, kw = kernel.shape
    weight = kernel[None, None].repeat(channels, 1, 1, 1)
    if up > 1:
        x = F.conv_transpose2d(x, weight, stride=up, groups=channels)
        x = F.pad(x, [px0 - (kw - 1), up + px1 - kw, py0 - (kh - 1), up + py1 - kh])
        return x[:, :, ::down, ::down] if down > 1 else x
    return F.conv2d(F.pad(x, [px0, px1, py0, py1]), weight.flip([2, 3]), stride=down, groups=channels)


def _fir_along(x: torch.Tensor, kernel: torch.Tensor, up: int, down: int, pad0: int, pad1: int, axis: int) -> torch.Tensor:
    """One pass of a separable upfirdn2d along ``axis`` (3: width, 2: height)."""
    channels, taps = x.shape[1], kernel.shape[0]
    shape, stride = ((1, taps), (1, up)) if axis == 3 else ((taps, 1), (up, 1))
    weight = kernel.reshape(1, 1, *shape).repeat(channels, 1, 1, 1)
    if up > 1:
        # the full convolution of the zero-stuffed signal, shifted and cut to the padded "valid" window
        x = _pad_or_crop(F.conv_transpose2d(x, weight, stride=stride, groups=channels), pad0 - (taps - 1), up + pad1 - taps, axis)
        if down > 1:
            x = x[:, :, :, ::down] if axis == 3 else x[:, :, ::down, :]
        return x
    down_stride = (1, down) if axis == 3 else (down, 1)
    return F.conv2d(_pad_or_crop(x, pad0, pad1, axis), weight.flip([2, 3]), stride=down_stride, groups=channels)


def _pad_or_crop(x: torch.Tensor, before: int, after: int, axis: int) -> torch.Tensor:
    """Zero-pad (positive) or crop (negative) ``axis``; crops are views and nothing is copied when both are 0."""
    if before < 0 or after < 0:
        stop = x.shape[axis] - max(-after, 0)
        x = x.narrow(axis, max(-before, 0), stop - max(-before, 0))
        before, after = max(before, 0), max(after, 0)
    if before == 0 and after == 0:
        return x
    return F.pad(x, [before, after, 0, 0] if axis == 3 else [0, 0, before, after])


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by ``up`` with the low-pass filter ``f`` (StyleGAN2's skip connections)."""
    fw = f.shape[-1]
    padding = ((fw + up - 1) // 2, (fw - up) // 2, (fw + up - 1) // 2, (fw - up) // 2)
    return upfirdn2d(x, f, up=up, padding=padding, gain=up * up)


def blur_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """StyleGAN2's resampling filter: the outer product of ``taps``, normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def grouped_conv(x: torch.Tensor, weights: torch.Tensor, *, padding=0, transpose_stride: int | None = None) -> torch.Tensor:
    """Convolve each sample with its own weights (N, O, I, k, k) as one grouped convolution."""
    batch, out_channels, in_channels, kh, kw = weights.shape
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    if transpose_stride is None:
        x = F.conv2d(x, weights.reshape(batch * out_channels, in_channels, kh, kw).to(x.dtype), padding=padding, groups=batch)
    else:
        # conv_transpose2d wants (in, out / groups, k, k) per group
        w = weights.transpose(1, 2).reshape(batch * in_channels, out_channels, kh, kw)
        x = F.conv_transpose2d(x, w.to(x.dtype), stride=transpose_stride, padding=padding, groups=batch)
    return x.reshape(batch, out_channels, *x.shape[2:])


def modulate(weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool) -> torch.Tensor:
    """Per-sample weights (N, O, I, k, k): the shared weight scaled by each sample's styles, demodulated."""
    w = weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, -1, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    return w


class FullyConnected(nn.Module):
    """StyleGAN's equalised-learning-rate linear layer (keys ``weight``, ``bias``)."""

    def __init__(self, in_features: int, out_features: int, *, activation: str = "linear", lr_multiplier: float = 1.0,
                 bias_init=0.0, weight_init: float = 1.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * (weight_init / lr_multiplier))
        bias = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features]) / lr_multiplier
        self.bias = nn.Parameter(torch.from_numpy(np.array(bias, dtype=np.float32)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) * self.weight_gain
        bias = self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(bias.unsqueeze(0), x, weight.t())
        return lrelu_gain_clamp(x.matmul(weight.t()) + bias)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z (and a class label) -> w, broadcast to ``num_ws`` copies, with truncation about ``w_avg``.

    The same network in StyleGAN2 (8 layers) and StyleGAN3 (2 layers); keys ``embed.*``,
    ``fc{i}.*`` and the ``w_avg`` buffer as in NVlabs' pickles.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, *, num_layers: int = 8, layer_features: int | None = None,
                 embed_features: int | None = None, lr_multiplier: float = 0.01, w_avg_beta: float | None = None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnected(c_dim, embed_features)
        for index in range(num_layers):
            setattr(self, f"fc{index}", FullyConnected(features[index], features[index + 1], activation="lrelu", lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None):
        x = normalize_2nd_moment(z.float()) if self.z_dim > 0 else None
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.float()))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for index in range(self.num_layers):
            x = getattr(self, f"fc{index}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws


class MappedGenerator(nn.Module):
    """``mapping`` + ``synthesis``, ``forward(z, c, truncation_psi)`` as NVlabs' ``G(z, c)``.

    StyleGAN2 and StyleGAN3 differ only in their synthesis network and the default mapping depth."""

    synthesis_network: type  # set by the subclass
    default_mapping_layers: int

    def __init__(self, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int = 1024, img_channels: int = 3, *,
                 mapping_kwargs: dict | None = None, **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution, self.img_channels = z_dim, c_dim, w_dim, img_resolution, img_channels
        self.synthesis = self.synthesis_network(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws,
                                      **{"num_layers": self.default_mapping_layers, **(mapping_kwargs or {})})

    def forward(self, z, c=None, truncation_psi: float = 1.0, noise_mode: str = "const"):
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi), noise_mode=noise_mode)
