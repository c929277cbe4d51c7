"""StyleGAN3 (Karras et al., NeurIPS 2021), configs T and R, in the layout of NVlabs' stylegan3 pickles.

Names follow ``training/networks_stylegan3.py`` (``synthesis.input.freqs``,
``synthesis.L3_52_512.up_filter``, ...). The filtered leaky ReLU is computed as its definition
says (upsample with the up filter, activate, downsample with the down filter), which is what
NVlabs' reference path does and what their CUDA kernel approximates.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F
from torch import nn

from discovery.generators import stylegan2
from discovery.generators.stylegan_ops import FullyConnected, MappedGenerator, add_bias, lrelu_gain_clamp, upfirdn2d


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """Kaiser-windowed low-pass FIR filter (separable 1-D, or 2-D radially symmetric); None for one tap."""
    if numtaps == 1:
        return None
    if not radial:
        return torch.as_tensor(scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    f *= np.outer(window, window)
    return torch.as_tensor(f / np.sum(f), dtype=torch.float32)


def modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool, padding: int,
                   input_gain: torch.Tensor) -> torch.Tensor:
    """StyleGAN3's modulated convolution (weights and styles pre-normalised, then demodulated)."""
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()  # over the whole batch, as the released code does
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    w = w * input_gain.expand(batch, in_channels).reshape(batch, 1, in_channels, 1, 1)
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    x = F.conv2d(x, w.reshape(batch * out_channels, in_channels, kh, kw).to(x.dtype), padding=padding, groups=batch)
    return x.reshape(batch, out_channels, *x.shape[2:])


class SynthesisInput(nn.Module):
    """Fourier features at fixed frequencies, rotated and translated by an affine map of w."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.channels, self.size, self.sampling_rate, self.bandwidth = channels, int(size), float(sampling_rate), float(bandwidth)
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnected(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        batch = w.shape[0]
        t = self.affine(w)  # (cos, sin, tx, ty) of the inverse rotation and translation
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rotation = torch.eye(3, device=w.device).unsqueeze(0).repeat(batch, 1, 1)
        rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        translation = torch.eye(3, device=w.device).unsqueeze(0).repeat(batch, 1, 1)
        translation[:, 0, 2], translation[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = rotation @ translation @ self.transform.unsqueeze(0)
        freqs = self.freqs.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = freqs @ transforms[:, :2, :2]
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = theta[1, 1] = 0.5 * self.size / self.sampling_rate
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False)
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # (N, H, W, C)
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (2 * np.pi)) * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(nn.Module):
    """Modulated convolution, then the filtered leaky ReLU (up-sample, activate, down-sample)."""

    def __init__(self, w_dim: int, *, is_torgb: bool, is_critically_sampled: bool, use_fp16: bool, in_channels: int, out_channels: int,
                 in_size: int, out_size: int, in_sampling_rate: int, out_sampling_rate: int, in_cutoff: float, out_cutoff: float,
                 in_half_width: float, out_half_width: float, conv_kernel: int = 3, filter_size: int = 6, lrelu_upsampling: int = 2,
                 use_radial_filters: bool = False, conv_clamp: float | None = 256,
                 magnitude_ema_beta: float = 0.999):
        super().__init__()
        self.is_torgb, self.use_fp16, self.in_channels, self.conv_clamp = is_torgb, use_fp16, in_channels, conv_clamp
        self.conv_kernel = 1 if is_torgb else conv_kernel
        tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, self.conv_kernel, self.conv_kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.up_factor = int(np.rint(tmp_sampling_rate / in_sampling_rate))
        self.down_factor = int(np.rint(tmp_sampling_rate / out_sampling_rate))
        up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.register_buffer("up_filter", lowpass_filter(up_taps, in_cutoff, in_half_width * 2, tmp_sampling_rate))
        self.register_buffer("down_filter", lowpass_filter(down_taps, out_cutoff, out_half_width * 2, tmp_sampling_rate,
                                                           radial=use_radial_filters and not is_critically_sampled))
        pad_total = (out_size - 1) * self.down_factor + 1 - (in_size + self.conv_kernel - 1) * self.up_factor + up_taps + down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2  # the symmetric sample positions of the paper's appendix C.3
        self.padding = [int(pad_lo), int(pad_total - pad_lo)] * 2
        self.out_size, self.out_channels = int(out_size), int(out_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, force_fp32: bool = False) -> torch.Tensor:
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles / math.sqrt(self.in_channels * self.conv_kernel ** 2)
        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and stylegan2.runs_half(x.device)) else torch.float32
        x = modulated_conv(x.to(dtype), self.weight, styles, demodulate=not self.is_torgb, padding=self.conv_kernel - 1,
                           input_gain=self.magnitude_ema.rsqrt())
        gain, slope = (1.0, 1.0) if self.is_torgb else (math.sqrt(2), 0.2)
        px0, px1, py0, py1 = self.padding
        # the filters are depthwise convolutions, about twice as fast on channels-last tensors (CPU, measured)
        try:
            x = x.contiguous(memory_format=torch.channels_last)
        except RuntimeError:
            pass  # under torch.func's vmap (the Hessian's batched HVPs) the memory format cannot be chosen
        x = upfirdn2d(add_bias(x, self.bias), self.up_filter, up=self.up_factor, padding=(px0, px1, py0, py1), gain=self.up_factor ** 2)
        # clamp(gain * lrelu(x), c) == gain * clamp(lrelu(x), c / gain): the gain rides on the (linear) down filter,
        # which saves a pass over the largest tensor of the layer
        x = lrelu_gain_clamp(x, slope=slope, gain=1.0, clamp=None if self.conv_clamp is None else self.conv_clamp / gain)
        return upfirdn2d(x, self.down_filter, down=self.down_factor, gain=gain)


class SynthesisNetwork(nn.Module):
    """ws (N, num_layers + 2, w_dim) -> images; w 0 drives the Fourier input, w i+1 layer i."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, *, channel_base: int = 32768, channel_max: int = 512,
                 num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2, first_stopband: float = 2 ** 2.1,
                 last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10, output_scale: float = 0.25, num_fp16_res: int = 4,
                 **layer_kwargs):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws = num_layers + 2
        self.output_scale = output_scale
        last_cutoff = img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels
        self.input = SynthesisInput(w_dim, int(channels[0]), int(sizes[0]), sampling_rates[0], cutoffs[0])
        self.layer_names = []
        for index in range(num_layers + 1):
            prev = max(index - 1, 0)
            layer = SynthesisLayer(
                w_dim, is_torgb=index == num_layers, is_critically_sampled=index >= num_layers - num_critical,
                use_fp16=bool(sampling_rates[index] * 2 ** num_fp16_res > img_resolution),
                in_channels=int(channels[prev]), out_channels=int(channels[index]), in_size=int(sizes[prev]), out_size=int(sizes[index]),
                in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[index]),
                in_cutoff=cutoffs[prev], out_cutoff=cutoffs[index], in_half_width=half_widths[prev], out_half_width=half_widths[index],
                **layer_kwargs)
            name = f"L{index}_{layer.out_size}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def layer_channels(self) -> list[tuple[str, int]]:
        """(name, input channels) of each modulated layer, in w order after the input's w 0."""
        return [(name, getattr(self, name).in_channels) for name in self.layer_names]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = False) -> torch.Tensor:
        ws = ws.float().unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w, force_fp32=force_fp32)
        return (x * self.output_scale).float() if self.output_scale != 1 else x.float()


class StyleGAN3Generator(MappedGenerator):
    """StyleGAN3: 2 mapping layers unless the file says otherwise; it has no noise inputs (``noise_mode`` is ignored)."""

    synthesis_network = SynthesisNetwork
    default_mapping_layers = 2
