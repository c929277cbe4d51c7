"""BigGAN-deep 128/256/512 as published in PyTorch by huggingface/pytorch-pretrained-BigGAN.

The checkpoint is a folder with ``config.json`` and ``pytorch_model.bin`` (a state dict of the
``BigGAN`` module: ``embeddings`` and ``generator``). This module re-implements the architecture
with the same parameter names and shapes and evaluates it exactly as that package does:

* input: z (128) and a class embedding (``embeddings``, a bias-free Linear(1000, 128) applied
  to a one-hot or mixed class vector) are concatenated into a 256-d condition vector;
* ``generator.gen_z`` (spectral-norm Linear) maps it to a 4x4x(16 ch) map in TF (NHWC) order;
* ``generator.layers``: bottleneck residual blocks (``bn_0``/``conv_0`` ... ``bn_3``/``conv_3``)
  whose batch norms are class-conditional, with a self-attention block at index 8;
* every batch norm keeps pre-computed statistics for 51 truncation values (``running_means``,
  ``running_vars`` of shape (51, C)); the ones used are interpolated at the truncation the
  latents were drawn with, by the same formula as the original code;
* ``generator.bn`` (unconditional) -> ReLU -> ``conv_to_rgb`` -> first 3 channels -> tanh.

z is drawn from a normal distribution truncated to [-2, 2] and scaled by the truncation
(``truncated_noise_sample`` of the original package; here by inverse CDF from a torch generator).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from discovery.errors import UserError
from discovery.generators.base import LatentGenerator
from discovery.generators.layers import (
    SNConv2d,
    SNLinear,
    conditional_batch_norm,
    initialize_random,
    load_generator_state,
    self_attention,
    truncated_normal,
    upsample2x,
)
from discovery.generators.registry import WeightsSource, register_generator
from discovery.imagenet import ClassPolicy, as_class_condition

# (upsample, in-channel multiplier, out-channel multiplier) per block, from the published configs.
_LAYERS_128 = [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8),
               (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)]
_LAYERS_256 = [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8), (True, 8, 8),
               (False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)]
_LAYERS_512 = _LAYERS_256 + [(False, 1, 1), (True, 1, 1)]
PUBLISHED_LAYERS = {128: _LAYERS_128, 256: _LAYERS_256, 512: _LAYERS_512}

# Published state-dict sizes (key count, number of values), the acceptance test of this module.
PUBLISHED_COUNTS = {128: (506, 50_388_609), 256: (602, 55_880_833), 512: (698, 56_163_905)}

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"
DOWNLOAD_ROOT = "https://s3.amazonaws.com/models.huggingface.co/biggan"


@dataclass
class BigGANDeepConfig:
    """The fields of pytorch-pretrained-BigGAN's ``config.json``."""

    output_dim: int = 128
    z_dim: int = 128
    class_embed_dim: int = 128
    channel_width: int = 128
    num_classes: int = 1000
    layers: list = field(default_factory=lambda: [list(layer) for layer in _LAYERS_128])
    attention_layer_position: int = 8
    eps: float = 1e-4
    n_stats: int = 51

    @classmethod
    def for_resolution(cls, resolution: int) -> "BigGANDeepConfig":
        if resolution not in PUBLISHED_LAYERS:
            raise UserError(f"BigGAN-deep comes in 128, 256 and 512 px, not {resolution}")
        return cls(output_dim=resolution, layers=[list(layer) for layer in PUBLISHED_LAYERS[resolution]])

    @classmethod
    def from_json_file(cls, path: str | Path) -> "BigGANDeepConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: not a readable BigGAN-deep config.json ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object with the BigGAN-deep config fields")
        resolution = data.get("output_dim", 128)
        defaults = cls.for_resolution(resolution) if resolution in PUBLISHED_LAYERS else cls()
        values = asdict(defaults)
        for key in values:
            if key in data:
                values[key] = data[key]
        try:
            config = cls(**values)
            config.validate()
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: invalid BigGAN-deep config ({exc})") from None
        return config

    def validate(self) -> None:
        for name in ("output_dim", "z_dim", "class_embed_dim", "channel_width", "num_classes", "attention_layer_position", "n_stats"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not isinstance(self.eps, (int, float)) or not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps!r}")
        if self.n_stats < 2:
            raise ValueError("n_stats must be at least 2")
        if not isinstance(self.layers, list) or not self.layers:
            raise ValueError("layers must be a non-empty list of [upsample, in, out]")
        for layer in self.layers:
            if not (isinstance(layer, (list, tuple)) and len(layer) == 3 and isinstance(layer[0], bool)
                    and all(isinstance(m, int) and m > 0 for m in layer[1:])):
                raise ValueError(f"each layer must be [upsample (bool), in multiplier, out multiplier], got {layer!r}")
        channels = 16
        for up, c_in, c_out in self.layers:
            if c_in != channels or c_out not in (c_in, c_in // 2):
                raise ValueError(f"layer {[up, c_in, c_out]} does not follow the previous one (channels {channels})")
            channels = c_out
        upsamplings = sum(bool(layer[0]) for layer in self.layers)
        if 4 * 2**upsamplings != self.output_dim:
            raise ValueError(f"layers upsample 4 px to {4 * 2**upsamplings} px, but output_dim is {self.output_dim}")
        if channels != 1:
            raise ValueError("the last layer must end at channel multiplier 1")


class TruncatedStatsBatchNorm(nn.Module):
    """Batch norm with statistics pre-computed for ``n_stats`` truncation values in [0, 1].

    Conditional: gain ``1 + scale(c)`` and bias ``offset(c)`` from the condition vector through
    spectral-norm linear maps. Unconditional: learned ``weight`` and ``bias``.
    """

    def __init__(self, num_features: int, condition_dim: int | None = None, n_stats: int = 51, eps: float = 1e-4, conditional: bool = True):
        super().__init__()
        self.eps = eps
        self.conditional = conditional
        self.step_size = 1.0 / (n_stats - 1)
        self.register_buffer("running_means", torch.zeros(n_stats, num_features))
        self.register_buffer("running_vars", torch.ones(n_stats, num_features))
        if conditional:
            self.scale = SNLinear(condition_dim, num_features, bias=False, eps=eps)
            self.offset = SNLinear(condition_dim, num_features, bias=False, eps=eps)
        else:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))

    def statistics(self, truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
        # Same arithmetic as the original BigGANBatchNorm (including which neighbour gets which
        # weight), so images match the published package at every truncation.
        coef, start = math.modf(truncation / self.step_size)
        start = int(start)
        if coef != 0.0:
            mean = self.running_means[start] * coef + self.running_means[start + 1] * (1 - coef)
            var = self.running_vars[start] * coef + self.running_vars[start + 1] * (1 - coef)
            return mean, var
        return self.running_means[start], self.running_vars[start]

    def forward(self, x: torch.Tensor, truncation: float, condition: torch.Tensor | None = None) -> torch.Tensor:
        mean, var = self.statistics(truncation)
        if self.conditional:
            gain = 1 + self.scale(condition)
            bias = self.offset(condition)
        else:
            gain = self.weight[None].expand(x.shape[0], -1)
            bias = self.bias[None].expand(x.shape[0], -1)
        return conditional_batch_norm(x, mean, var, self.eps, gain, bias)


class DeepBlock(nn.Module):
    """Bottleneck residual block: 1x1 down to in/4 channels, two 3x3, 1x1 up; skip drops channels."""

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int, upsample: bool, n_stats: int, eps: float, reduction: int = 4):
        super().__init__()
        middle = in_channels // reduction
        self.upsample = upsample
        self.out_channels = out_channels
        self.bn_0 = TruncatedStatsBatchNorm(in_channels, condition_dim, n_stats, eps)
        self.conv_0 = SNConv2d(in_channels, middle, kernel_size=1, eps=eps)
        self.bn_1 = TruncatedStatsBatchNorm(middle, condition_dim, n_stats, eps)
        self.conv_1 = SNConv2d(middle, middle, kernel_size=3, padding=1, eps=eps)
        self.bn_2 = TruncatedStatsBatchNorm(middle, condition_dim, n_stats, eps)
        self.conv_2 = SNConv2d(middle, middle, kernel_size=3, padding=1, eps=eps)
        self.bn_3 = TruncatedStatsBatchNorm(middle, condition_dim, n_stats, eps)
        self.conv_3 = SNConv2d(middle, out_channels, kernel_size=1, eps=eps)

    def forward(self, x: torch.Tensor, condition: torch.Tensor, truncation: float) -> torch.Tensor:
        h = self.conv_0(F.relu(self.bn_0(x, truncation, condition)))
        h = F.relu(self.bn_1(h, truncation, condition))
        if self.upsample:
            h = upsample2x(h)
        h = self.conv_1(h)
        h = self.conv_2(F.relu(self.bn_2(h, truncation, condition)))
        h = self.conv_3(F.relu(self.bn_3(h, truncation, condition)))
        skip = x[:, : self.out_channels] if x.shape[1] != self.out_channels else x
        if self.upsample:
            skip = upsample2x(skip)
        return h + skip


class DeepSelfAttention(nn.Module):
    """Self-attention with pytorch-pretrained-BigGAN's parameter names."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.snconv1x1_theta = SNConv2d(channels, channels // 8, kernel_size=1, bias=False, eps=eps)
        self.snconv1x1_phi = SNConv2d(channels, channels // 8, kernel_size=1, bias=False, eps=eps)
        self.snconv1x1_g = SNConv2d(channels, channels // 2, kernel_size=1, bias=False, eps=eps)
        self.snconv1x1_o_conv = SNConv2d(channels // 2, channels, kernel_size=1, bias=False, eps=eps)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self_attention(x, self.snconv1x1_theta, self.snconv1x1_phi, self.snconv1x1_g, self.snconv1x1_o_conv, self.gamma)


class DeepGeneratorNetwork(nn.Module):
    """``BigGAN.generator`` of the original package."""

    def __init__(self, config: BigGANDeepConfig):
        super().__init__()
        ch = config.channel_width
        self.channel_width = ch
        condition_dim = config.z_dim + config.class_embed_dim
        self.gen_z = SNLinear(condition_dim, 4 * 4 * 16 * ch, eps=config.eps)
        layers: list[nn.Module] = []
        for i, (up, c_in, c_out) in enumerate(config.layers):
            if i == config.attention_layer_position:
                layers.append(DeepSelfAttention(ch * c_in, eps=config.eps))
            layers.append(DeepBlock(ch * c_in, ch * c_out, condition_dim, bool(up), config.n_stats, config.eps))
        self.layers = nn.ModuleList(layers)
        self.bn = TruncatedStatsBatchNorm(ch, n_stats=config.n_stats, eps=config.eps, conditional=False)
        self.conv_to_rgb = SNConv2d(ch, ch, kernel_size=3, padding=1, eps=config.eps)

    def forward(self, condition: torch.Tensor, truncation: float, channels_last: bool = False) -> torch.Tensor:
        h = self.gen_z(condition)
        # TF order (N, H, W, C) -> (N, C, H, W); the permuted view already is channels-last memory.
        h = h.view(-1, 4, 4, 16 * self.channel_width).permute(0, 3, 1, 2)
        h = h.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for layer in self.layers:
            h = layer(h, condition, truncation) if isinstance(layer, DeepBlock) else layer(h)
        h = F.relu(self.bn(h, truncation))
        # Only the first 3 of conv_to_rgb's output channels are kept: compute just those.
        rgb = self.conv_to_rgb
        h = F.conv2d(h, rgb.weight_sn[:3], rgb.bias[:3], padding=rgb.padding)
        return torch.tanh(h)


class BigGANDeepNetwork(nn.Module):
    """The ``BigGAN`` module whose state dict is ``pytorch_model.bin``."""

    def __init__(self, config: BigGANDeepConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.Linear(config.num_classes, config.class_embed_dim, bias=False)
        self.generator = DeepGeneratorNetwork(config)

    def embed(self, condition: torch.Tensor) -> torch.Tensor:
        if condition.dtype == torch.int64:
            return self.embeddings.weight.t()[condition]
        return self.embeddings(condition.to(self.embeddings.weight.dtype))

    def forward(self, z: torch.Tensor, condition: torch.Tensor, truncation: float, channels_last: bool = False) -> torch.Tensor:
        if not 0 < truncation <= 1:
            raise ValueError(f"truncation must be in (0, 1], got {truncation}")
        vector = torch.cat([z, self.embed(condition)], dim=1)
        return self.generator(vector, truncation, channels_last)

    @torch.no_grad()
    def initialize_random(self, seed: int = 0) -> "BigGANDeepNetwork":
        """Seeded random weights (tests and benchmarks; the real ones come from a checkpoint)."""
        generator = torch.Generator().manual_seed(seed)
        self.embeddings.weight.copy_(torch.randn(self.embeddings.weight.shape, generator=generator) * 0.1)
        initialize_random(self, seed + 1)
        for module in self.modules():
            if isinstance(module, TruncatedStatsBatchNorm):
                n, c = module.running_means.shape
                module.running_means.copy_(torch.randn(n, c, generator=generator) * 0.05)
                module.running_vars.copy_(1 + torch.rand(n, c, generator=generator) * 0.2)
                if not module.conditional:
                    module.weight.copy_(1 + torch.randn(c, generator=generator) * 0.05)
                    module.bias.copy_(torch.randn(c, generator=generator) * 0.05)
            elif isinstance(module, DeepSelfAttention):
                module.gamma.fill_(0.1)
        return self


class BigGANDeepGenerator(LatentGenerator):
    """BigGAN-deep as a LatentGenerator: ``G(z, classes)`` -> images in [-1, 1].

    ``classes`` (the class policy) is a ``--classes`` value: ImageNet indices or names, or
    ``'all'`` (uniform over the 1000 classes, the default). ``truncation`` in (0, 1] scales the
    truncated-normal latents and selects the matching batch-norm statistics.
    """

    conditional = True

    def __init__(self, config: BigGANDeepConfig | None = None, classes=None, truncation: float = 1.0):
        super().__init__()
        config = config or BigGANDeepConfig()
        truncation = float(truncation)
        if not 0 < truncation <= 1:
            raise UserError(f"--truncation {truncation}: must be in (0, 1]")
        self.model = BigGANDeepNetwork(config)
        self.dim_z = config.z_dim
        self.resolution = config.output_dim
        self.truncation = truncation
        self.policy = ClassPolicy(classes, config.num_classes)
        self.name = f"biggan-deep-{config.output_dim}"

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return truncated_normal(n, self.dim_z, self.truncation, generator=generator).to(self.device)

    def sample_condition(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.policy.sample(n, generator).to(self.device)

    def forward(self, z: torch.Tensor, condition=None) -> torch.Tensor:
        if self.model.generator.gen_z.weight_sn.numel() == 0:
            raise RuntimeError(f"{self.name}: weights not loaded (use create_generator(name, weights=...) or model.initialize_random())")
        n = z.shape[0]
        if condition is None:
            # No condition given: a fixed draw from the policy, the same for every call of this size.
            condition = self.policy.sample(n, torch.Generator().manual_seed(0))
        condition = as_class_condition(condition, n, self.model.config.num_classes).to(z.device)
        dtype = self.model.embeddings.weight.dtype
        channels_last = self.model.generator.layers[0].conv_1.weight_sn.is_contiguous(memory_format=torch.channels_last)
        images = self.model(z.to(dtype), condition, self.truncation, channels_last)
        return images.float()

    def latent_weight(self) -> torch.Tensor:
        """The (spectrally normalised) weight of the first layer restricted to z: (features, dim_z)."""
        return self.model.generator.gen_z.weight_sn[:, : self.dim_z]

    def describe(self) -> dict:
        return {**super().describe(), "truncation": self.truncation, "classes": self.policy.describe()}


def _locate_files(path: Path) -> tuple[Path, Path | None]:
    """(pytorch_model.bin, config.json or None) from a folder or a weights file."""
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise UserError(f"--weights {path}: the folder has no {WEIGHTS_NAME} (expected {CONFIG_NAME} and {WEIGHTS_NAME} of pytorch-pretrained-BigGAN)")
        config = path / CONFIG_NAME
        return weights, config if config.is_file() else None
    config = path.parent / CONFIG_NAME
    return path, config if config.is_file() else None


def load_biggan_deep(path: str | Path, resolution: int, classes=None, truncation: float = 1.0) -> BigGANDeepGenerator:
    """Build a BigGAN-deep generator and load a pytorch-pretrained-BigGAN checkpoint (folder or file)."""
    weights, config_path = _locate_files(Path(path))
    config = BigGANDeepConfig.from_json_file(config_path) if config_path else BigGANDeepConfig.for_resolution(resolution)
    if config.output_dim != resolution:
        raise UserError(
            f"{config_path}: describes a {config.output_dim}-px BigGAN-deep, not {resolution} px; "
            f"use --generator biggan-deep-{config.output_dim}"
        )
    generator = BigGANDeepGenerator(config, classes=classes, truncation=truncation)
    load_generator_state(
        generator.model,
        weights,
        expected=f"a BigGAN-deep {resolution} state dict (pytorch-pretrained-BigGAN conversion)",
        optional_suffixes=(".weight_v",),
    )
    return generator


def _register(resolution: int) -> None:
    name = f"biggan-deep-{resolution}"
    source = WeightsSource(
        filename="pytorch_pretrained_biggan",
        url=f"{DOWNLOAD_ROOT}/{name}-{{file}}",
        files=(CONFIG_NAME, WEIGHTS_NAME),
        note=f"the {name} conversion of huggingface/pytorch-pretrained-BigGAN; no checksum is published, the file is checked by strict key/shape loading",
    )

    @register_generator(name, description=f"BigGAN-deep {resolution} px, ImageNet class-conditional (pytorch-pretrained-BigGAN weights)", weights=source)
    def build(weights=None, classes=None, truncation=None):
        if weights is None:
            raise UserError(f"{name}: needs weights (--weights PATH: a folder with {CONFIG_NAME} and {WEIGHTS_NAME})")
        return load_biggan_deep(weights, resolution, classes=classes, truncation=1.0 if truncation is None else truncation)


for _resolution in (128, 256, 512):
    _register(_resolution)
