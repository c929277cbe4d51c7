"""StyleGAN2 (Karras et al., CVPR 2020) in the layout of NVlabs' stylegan2-ada-pytorch pickles.

Module and buffer names are those of ``training/networks.py`` there (``mapping.fc0.weight``,
``synthesis.b4.const``, ``synthesis.b8.conv0.noise_const``, ...), so a pickle's persisted state
loads with ``load_state_dict(strict=True)``. Only the generator's skip architecture (the one every
released StyleGAN2 generator uses) is built. Blocks marked ``use_fp16`` run in float16 with
channels-last on CUDA, as in the papers' code; on CPU everything runs in float32.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from discovery.generators.stylegan_ops import (
    FullyConnected,
    MappedGenerator,
    add_bias,
    blur_filter,
    grouped_conv,
    lrelu_gain_clamp,
    modulate,
    upfirdn2d,
    upsample2d,
)

def runs_half(device: torch.device) -> bool:
    """Whether layers marked use_fp16 run in float16 on ``device`` (CUDA only, as in NVlabs' code)."""
    return device.type == "cuda"


def _fp16_prenormalize(weight: torch.Tensor, styles: torch.Tensor):
    """Scale weights and styles before a float16 modulated convolution so it cannot overflow
    (demodulation removes the scale again)."""
    out_channels, in_channels, kh, kw = weight.shape
    weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
    styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    return weight, styles


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling by 2), noise, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: int = 1, kernel_size: int = 3,
                 use_noise: bool = True, conv_clamp: float | None = None):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, use_noise, conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", blur_filter())
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        styles = self.affine(w)
        weight = self.weight
        if x.dtype == torch.float16:
            weight, styles = _fp16_prenormalize(weight, styles)
        weights = modulate(weight, styles, demodulate=True)
        if self.up == 1:
            x = grouped_conv(x, weights, padding=self.padding)
        else:
            # transposed convolution with stride 2, then the blur that makes it a proper upsampling
            x = grouped_conv(x, weights, transpose_stride=self.up)
            kw = weight.shape[-1]
            fw = self.resample_filter.shape[-1]
            lo = self.padding + (fw + self.up - 1) // 2 - (kw - 1)
            hi = self.padding + (fw - self.up) // 2 - (kw - self.up)
            x = upfirdn2d(x, self.resample_filter, padding=(lo, hi, lo, hi), gain=self.up ** 2)
        if self.use_noise and noise_mode != "none":
            if noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            else:
                noise = self.noise_const.to(x.dtype)
            x = x + noise * self.noise_strength.to(x.dtype)
        return lrelu_gain_clamp(add_bias(x, self.bias), clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to colour, without demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = grouped_conv(x, modulate(self.weight, styles, demodulate=False))
        x = add_bias(x, self.bias)
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class SynthesisBlock(nn.Module):
    """One resolution: (constant input or upsampling conv0), conv1, and a ToRGB added to the upsampled image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int, *,
                 use_fp16: bool = False, conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.resolution, self.use_fp16 = in_channels, resolution, use_fp16
        self.register_buffer("resample_filter", blur_filter())
        self.num_conv = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb = 1

    def forward(self, x, img, ws, *, noise_mode: str = "const", force_fp32: bool = False):
        half = self.use_fp16 and not force_fp32 and runs_half(ws.device)
        dtype = torch.float16 if half else torch.float32
        memory_format = torch.channels_last if half else torch.contiguous_format
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1).to(memory_format=memory_format)
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)
            x = self.conv0(x, next(w_iter), noise_mode)
        x = self.conv1(x, next(w_iter), noise_mode)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter)).to(dtype=torch.float32, memory_format=torch.contiguous_format)
        img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> images (N, img_channels, R, R); the torgb of a block shares its w with the next conv0."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, *, channel_base: int = 32768, channel_max: int = 512,
                 num_fp16_res: int = 0, conv_clamp: float | None = None, channels: dict | None = None):
        super().__init__()
        log2 = int(np.log2(img_resolution))
        if img_resolution < 4 or 2 ** log2 != img_resolution:
            raise ValueError(f"StyleGAN2 resolution {img_resolution} is not a power of two >= 4")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        # channels per resolution: NVlabs' formula, or an explicit table (rosinality's files fix 512 up to 32 px)
        channels = {int(r): int(c) for r, c in channels.items()} if channels else {
            res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res, img_channels,
                                   use_fp16=res >= fp16_resolution, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's torgb

    def layer_channels(self) -> list[tuple[str, int]]:
        """(name, input channels) of each modulated layer, in w order (conv layers; torgbs share a w)."""
        out = []
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            for name in ("conv0", "conv1"):
                if hasattr(block, name):
                    out.append((f"b{res}.{name}", getattr(block, name).affine.weight.shape[0]))
        return out

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = False) -> torch.Tensor:
        x = img = None
        index = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, index, block.num_conv + block.num_torgb), noise_mode=noise_mode, force_fp32=force_fp32)
            index += block.num_conv
        return img


class StyleGAN2Generator(MappedGenerator):
    """StyleGAN2: 8 mapping layers unless the file says otherwise."""

    synthesis_network = SynthesisNetwork
    default_mapping_layers = 8
