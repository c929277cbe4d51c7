"""BigGAN and BigBiGAN generators in the layout of the BigGAN-PyTorch code base (ajbrock).

``biggan-128``: the ImageNet 128 px generator released with BigGAN-PyTorch (``G_ema.pth``,
G_ch 96, dim_z 120, shared class embedding 128, hierarchical z, attention at 64 px), the model
Voynov & Babenko (ICML 2020) discover directions in. Their config: BN eps 1e-5, SN eps 1e-6.

``bigbigan-128``: the BigBiGAN generator converted from TF Hub into the same layout by Voynov
et al. ("Object Segmentation Without Labels...", ``BigBiGAN_x1.pth``): unconditional (its
embedding table holds one vector, repeated; class 0 is used), BN and SN eps 1e-4.

Architecture facts (same names and shapes as the original, so ``G_ema.pth`` loads strictly):
* ``shared`` Embedding(1000, 128); z (120) splits into 6 chunks of 20: chunk 0 feeds
  ``linear`` (spectral-norm, 20 -> 4*4*16*ch), chunk i+1 is concatenated after the class
  embedding to condition block i (148-d);
* ``blocks.i.0``: residual up-block (``bn1``, ``conv1``, ``bn2``, ``conv2``, ``conv_sc``) with
  class-conditional batch norms (``gain``/``bias`` spectral-norm linears without bias, stored
  statistics ``stored_mean``/``stored_var``); ``blocks.3.1``: self-attention at 64 px;
* ``output_layer``: batch norm (``gain``, ``bias``, eps 1e-5 as in the original) -> ReLU ->
  spectral-norm 3x3 conv to RGB -> tanh.
Spectral-norm layers keep ``weight``, ``u0``, ``sv0``; in eval mode the original divides by the
singular value of one power-iteration step from ``u0``, which is what ``layers.SNConv2d`` does.
``sv0`` is only a logging value and may be absent from converted files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
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
    upsample2x,
)
from discovery.generators.registry import WeightsSource, register_generator
from discovery.imagenet import ClassPolicy, as_class_condition

# Channel multipliers of the generator blocks (BigGAN-PyTorch G_arch).
_ARCH = {
    128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1]),
    256: ([16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1]),
    512: ([16, 16, 8, 8, 4, 2, 1], [16, 8, 8, 4, 2, 1, 1]),
}

# Published size of G_ema.pth (BigGAN-PyTorch, ImageNet 128): state-dict keys and parameters.
PUBLISHED_KEYS_128 = 166
PUBLISHED_PARAMETERS_128 = 70_433_988  # "about 70.43M"

BIGGAN_FILE = "G_ema.pth"
BIGBIGAN_FILE = "BigBiGAN_x1.pth"


@dataclass
class BigGANConfig:
    resolution: int = 128
    dim_z: int = 120
    G_ch: int = 96
    shared_dim: int = 128
    n_classes: int = 1000
    attention: tuple[int, ...] = (64,)
    bn_eps: float = 1e-5
    sn_eps: float = 1e-6
    output_bn_eps: float = 1e-5  # the original output batch norm never receives BN_eps
    bottom_width: int = 4

    @property
    def in_channels(self) -> list[int]:
        return [self.G_ch * m for m in _ARCH[self.resolution][0]]

    @property
    def out_channels(self) -> list[int]:
        return [self.G_ch * m for m in _ARCH[self.resolution][1]]

    @property
    def num_slots(self) -> int:
        return len(self.in_channels) + 1

    @property
    def z_chunk(self) -> int:
        return self.dim_z // self.num_slots


BIGGAN_128 = BigGANConfig()
BIGBIGAN_128 = BigGANConfig(bn_eps=1e-4, sn_eps=1e-4)


class ClassConditionalBatchNorm(nn.Module):
    """``ccbn``: stored statistics, gain ``1 + gain(y)`` and bias ``bias(y)`` from the condition."""

    def __init__(self, channels: int, condition_dim: int, eps: float, sn_eps: float):
        super().__init__()
        self.eps = eps
        self.gain = SNLinear(condition_dim, channels, bias=False, eps=sn_eps, layout="brock")
        self.bias = SNLinear(condition_dim, channels, bias=False, eps=sn_eps, layout="brock")
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return conditional_batch_norm(x, self.stored_mean, self.stored_var, self.eps, 1 + self.gain(y), self.bias(y))


class OutputBatchNorm(nn.Module):
    """``bn``: unconditional batch norm with ``gain``/``bias`` parameters and stored statistics."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        return conditional_batch_norm(x, self.stored_mean, self.stored_var, self.eps, self.gain[None].expand(n, -1), self.bias[None].expand(n, -1))


class UpBlock(nn.Module):
    """``GBlock``: BN-ReLU-up-conv3x3-BN-ReLU-conv3x3, plus an up-sampled 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int, config: BigGANConfig):
        super().__init__()
        eps = config.sn_eps
        self.conv1 = SNConv2d(in_channels, out_channels, kernel_size=3, padding=1, eps=eps, layout="brock")
        self.conv2 = SNConv2d(out_channels, out_channels, kernel_size=3, padding=1, eps=eps, layout="brock")
        self.conv_sc = SNConv2d(in_channels, out_channels, kernel_size=1, eps=eps, layout="brock")
        self.bn1 = ClassConditionalBatchNorm(in_channels, condition_dim, config.bn_eps, eps)
        self.bn2 = ClassConditionalBatchNorm(out_channels, condition_dim, config.bn_eps, eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = upsample2x(torch.relu(self.bn1(x, y)))
        h = self.conv1(h)
        h = self.conv2(torch.relu(self.bn2(h, y)))
        # A 1x1 conv commutes with nearest up-sampling: convolve the small map (4x fewer FLOPs).
        return h + upsample2x(self.conv_sc(x))


class Attention(nn.Module):
    """SA-GAN block with BigGAN-PyTorch's names (``theta``, ``phi``, ``g``, ``o``, 0-d ``gamma``)."""

    def __init__(self, channels: int, sn_eps: float):
        super().__init__()
        self.theta = SNConv2d(channels, channels // 8, kernel_size=1, bias=False, eps=sn_eps, layout="brock")
        self.phi = SNConv2d(channels, channels // 8, kernel_size=1, bias=False, eps=sn_eps, layout="brock")
        self.g = SNConv2d(channels, channels // 2, kernel_size=1, bias=False, eps=sn_eps, layout="brock")
        self.o = SNConv2d(channels // 2, channels, kernel_size=1, bias=False, eps=sn_eps, layout="brock")
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self_attention(x, self.theta, self.phi, self.g, self.o, self.gamma)


class BigGANNetwork(nn.Module):
    """``BigGAN.Generator`` (G_shared, hier, SN) whose state dict is ``G_ema.pth``."""

    def __init__(self, config: BigGANConfig):
        super().__init__()
        if config.resolution not in _ARCH:
            raise ValueError(f"resolution must be one of {sorted(_ARCH)}")
        self.config = config
        self.z_chunk = config.z_chunk
        self.dim_z = config.z_chunk * config.num_slots
        condition_dim = config.shared_dim + config.z_chunk
        self.shared = nn.Embedding(config.n_classes, config.shared_dim)
        self.linear = SNLinear(config.z_chunk, config.in_channels[0] * config.bottom_width**2, eps=config.sn_eps, layout="brock")
        blocks = []
        resolution = config.bottom_width
        for c_in, c_out in zip(config.in_channels, config.out_channels):
            resolution *= 2
            block: list[nn.Module] = [UpBlock(c_in, c_out, condition_dim, config)]
            if resolution in config.attention:
                block.append(Attention(c_out, config.sn_eps))
            blocks.append(nn.ModuleList(block))
        self.blocks = nn.ModuleList(blocks)
        last = config.out_channels[-1]
        self.output_layer = nn.Sequential(
            OutputBatchNorm(last, config.output_bn_eps),
            nn.ReLU(),
            SNConv2d(last, 3, kernel_size=3, padding=1, eps=config.sn_eps, layout="brock"),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """z (N, dim_z) and the class embedding y (N, shared_dim) -> images (N, 3, H, W)."""
        chunks = torch.split(z, self.z_chunk, dim=1)
        h = self.linear(chunks[0]).view(z.shape[0], -1, self.config.bottom_width, self.config.bottom_width)
        if channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        for blocklist, chunk in zip(self.blocks, chunks[1:]):
            condition = torch.cat([y, chunk], dim=1)
            for block in blocklist:
                h = block(h, condition)
        return torch.tanh(self.output_layer(h))

    @torch.no_grad()
    def initialize_random(self, seed: int = 0) -> "BigGANNetwork":
        """Seeded random weights (tests and benchmarks; the real ones come from a checkpoint)."""
        generator = torch.Generator().manual_seed(seed)
        self.shared.weight.copy_(torch.randn(self.shared.weight.shape, generator=generator) * 0.1)
        initialize_random(self, seed + 1)
        for module in self.modules():
            if isinstance(module, (ClassConditionalBatchNorm, OutputBatchNorm)):
                c = module.stored_mean.shape[0]
                module.stored_mean.copy_(torch.randn(c, generator=generator) * 0.05)
                module.stored_var.copy_(1 + torch.rand(c, generator=generator) * 0.2)
            if isinstance(module, OutputBatchNorm):
                module.gain.copy_(1 + torch.randn(module.gain.shape, generator=generator) * 0.05)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.05)
            elif isinstance(module, Attention):
                module.gamma.fill_(0.1)
        return self


class BigGANGenerator(LatentGenerator):
    """A BigGAN-PyTorch generator as a LatentGenerator: z ~ N(0, I) (120-d for 128 px).

    Conditional (``biggan-128``): ``classes`` is a ``--classes`` value (ImageNet indices or
    names, or ``'all'``, the default). Unconditional (``bigbigan-128``): class 0 always.
    """

    def __init__(self, config: BigGANConfig = BIGGAN_128, classes=None, conditional: bool = True, name: str = "biggan-128"):
        super().__init__()
        self.model = BigGANNetwork(config)
        self.dim_z = self.model.dim_z
        self.resolution = config.resolution
        self.conditional = conditional
        self.policy = ClassPolicy(classes, config.n_classes) if conditional else None
        self.name = name

    def sample_condition(self, n: int, generator: torch.Generator | None = None):
        if not self.conditional:
            return None
        return self.policy.sample(n, generator).to(self.device)

    def class_embedding(self, condition, n: int, device) -> torch.Tensor:
        table = self.model.shared.weight
        if not self.conditional:
            return table[0].expand(n, -1)
        if condition is None:
            # No condition given: a fixed draw from the policy, the same for every call of this size.
            condition = self.policy.sample(n, torch.Generator().manual_seed(0))
        condition = as_class_condition(condition, n, self.model.config.n_classes).to(device)
        if condition.dtype == torch.int64:
            return table[condition]
        return condition.to(table.dtype) @ table

    def forward(self, z: torch.Tensor, condition=None) -> torch.Tensor:
        if self.model.linear.weight_sn.numel() == 0:
            raise RuntimeError(f"{self.name}: weights not loaded (use create_generator(name, weights=...) or model.initialize_random())")
        dtype = self.model.shared.weight.dtype
        y = self.class_embedding(condition, z.shape[0], z.device)
        channels_last = self.model.blocks[0][0].conv1.weight_sn.is_contiguous(memory_format=torch.channels_last)
        return self.model(z.to(dtype), y, channels_last).float()

    def latent_weight(self) -> torch.Tensor:
        """Every (spectrally normalised) weight that multiplies a chunk of z, as one
        (features, dim_z) matrix: ``linear`` for chunk 0, and for chunk i+1 the z columns of block
        i's batch-norm gain and bias maps. Used by SeFa; W^T W is block-diagonal by chunk."""
        model, chunk = self.model, self.model.z_chunk
        parts = [(0, model.linear.weight_sn)]
        for i, blocklist in enumerate(model.blocks):
            block = blocklist[0]
            for bn in (block.bn1, block.bn2):
                for layer in (bn.gain, bn.bias):
                    parts.append((i + 1, layer.weight_sn[:, -chunk:]))
        rows = sum(w.shape[0] for _, w in parts)
        matrix = torch.zeros(rows, self.dim_z, dtype=parts[0][1].dtype, device=parts[0][1].device)
        start = 0
        for slot, weight in parts:
            matrix[start : start + weight.shape[0], slot * chunk : (slot + 1) * chunk] = weight
            start += weight.shape[0]
        return matrix

    def describe(self) -> dict:
        info = super().describe()
        if self.conditional:
            info["classes"] = self.policy.describe()
        return info


def _locate_file(path: Path, filename: str) -> Path:
    if not path.is_dir():
        return path
    if (path / filename).is_file():
        return path / filename
    candidates = sorted(p for p in path.iterdir() if p.suffix in (".pth", ".pt", ".bin") and p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    raise UserError(f"--weights {path}: the folder has no {filename}" + (f" and several candidates ({', '.join(p.name for p in candidates[:4])})" if candidates else ""))


def load_biggan(path: str | Path, config: BigGANConfig, *, name: str, filename: str, conditional: bool, classes=None) -> BigGANGenerator:
    generator = BigGANGenerator(config, classes=classes, conditional=conditional, name=name)
    load_generator_state(
        generator.model,
        _locate_file(Path(path), filename),
        expected=f"a BigGAN-PyTorch {config.resolution}-px generator state dict ({filename}, {name})",
        optional_suffixes=(".sv0",),
    )
    return generator


@register_generator(
    "biggan-128",
    description="BigGAN 128 px of BigGAN-PyTorch (G_ema.pth, dim_z 120), ImageNet class-conditional; Voynov & Babenko's model",
    weights=WeightsSource(
        filename=BIGGAN_FILE,
        note="BigGAN-PyTorch's pretrained ImageNet-128 G_ema.pth (BigGAN_ch96_bs256x8_138k); also inside the 'biggan' archive of "
        "anvoynov/GANLatentDiscovery (https://www.dropbox.com/s/zte4oein08ajsij/pretrained_biggan.tar); no checksum is published",
    ),
)
def build_biggan_128(weights=None, classes=None, truncation=None):
    if truncation is not None:
        raise UserError("--truncation applies to biggan-deep-* only; biggan-128 draws z ~ N(0, I)")
    if weights is None:
        raise UserError(f"biggan-128: needs weights (--weights PATH to {BIGGAN_FILE})")
    return load_biggan(weights, BIGGAN_128, name="biggan-128", filename=BIGGAN_FILE, conditional=True, classes=classes)


@register_generator(
    "bigbigan-128",
    description="BigBiGAN generator 128 px in the BigGAN-PyTorch layout (unconditional, dim_z 120); best saliency masks",
    weights=WeightsSource(
        filename=BIGBIGAN_FILE,
        url="https://www.dropbox.com/s/9w2i45h455k3b4p/BigBiGAN_x1.pth?dl=1",
        note="the BigBiGAN_x1.pth conversion of anvoynov/BigGANsAreWatching; no checksum is published, the file is checked by strict key/shape loading",
    ),
)
def build_bigbigan_128(weights=None, classes=None, truncation=None):
    if classes is not None and str(classes).strip().lower() not in ("all", "0"):
        raise UserError("--classes: bigbigan-128 is unconditional (it always uses class 0)")
    if truncation is not None:
        raise UserError("--truncation applies to biggan-deep-* only; bigbigan-128 draws z ~ N(0, I)")
    if weights is None:
        raise UserError(f"bigbigan-128: needs weights (--weights PATH to {BIGBIGAN_FILE})")
    return load_biggan(weights, BIGBIGAN_128, name="bigbigan-128", filename=BIGBIGAN_FILE, conditional=False)
