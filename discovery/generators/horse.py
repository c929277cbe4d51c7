"""The embedded default generator: a small unconditional GAN trained on Weizmann horses.

``horse-64`` is a DCGAN-shaped generator (latent 128 -> 64 x 64 RGB) whose weights ship inside
the package (``discovery/weights/horse64.pt``, made by ``saliency train-gan``; see
``discovery/weights/README.md`` for the exact command). It is small enough to run every method
of the package on a CPU and real enough to have a background/foreground structure.

Design choices that matter to the rest of the package:
- No batch normalisation: pixel-wise feature normalisation (ProGAN) keeps ``G(z)`` independent of
  the other latents in the batch, so train and eval mode agree and ``G(z)``, ``G(z + shift)``
  give the same image whatever the batch size.
- The discriminator lives here too (it is the generator's training partner, never shipped).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from discovery.errors import UserError
from discovery.generators.base import LatentGenerator
from discovery.generators.registry import WeightsSource, register_generator

GAN_FORMAT = "saliency.gan/1"  # the shippable generator file
SNAPSHOT_FORMAT = "saliency.gan-snapshot/1"  # a training snapshot (G, D, G_ema, optimisers, RNG)


class PixelNorm(nn.Module):
    """Normalise each pixel's feature vector to unit RMS (Karras et al. 2018); batch-independent."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class HorseGenerator(LatentGenerator):
    """z (dim_z) -> 4x4 features -> four 2x transposed-convolution stages -> 64x64 RGB in [-1, 1]."""

    def __init__(self, dim_z: int = 128, width: int = 32, resolution: int = 64):
        super().__init__()
        if resolution not in (32, 64, 128):
            raise ValueError("resolution must be 32, 64 or 128")
        self.dim_z, self.width, self.resolution = int(dim_z), int(width), int(resolution)
        stages = {32: 3, 64: 4, 128: 5}[resolution]
        channels = [min(width * 2 ** (stages - 1 - i), width * 8) for i in range(stages)]  # 4x4 ... res/2
        self.input = nn.Linear(dim_z, channels[0] * 16)
        self.input_act = nn.Sequential(PixelNorm(), nn.LeakyReLU(0.2))
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            blocks += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), PixelNorm(), nn.LeakyReLU(0.2)]
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.ConvTranspose2d(channels[-1], 3, 4, 2, 1)
        self._channels = channels

    def config(self) -> dict:
        return {"architecture": "horse-dcgan", "dim_z": self.dim_z, "width": self.width, "resolution": self.resolution}

    def forward(self, z: torch.Tensor, condition=None) -> torch.Tensor:
        x = self.input(z).view(z.shape[0], self._channels[0], 4, 4)
        x = self.blocks(self.input_act(x))
        return torch.tanh(self.to_rgb(x))


class HorseDiscriminator(nn.Module):
    """Mirror of the generator: strided 4x4 convolutions, then a linear score.

    ``norm="spectral"``: spectral norm on every layer (SNGAN; stable, slow to learn with one D step
    per G step). ``norm="batch"``: DCGAN's batch norm after every convolution but the first (fast to
    learn; real and fake batches go through D separately, so each is normalised on its own).
    """

    def __init__(self, width: int = 32, resolution: int = 64, norm: str = "spectral"):
        super().__init__()
        if norm not in ("spectral", "batch"):
            raise ValueError("norm must be 'spectral' or 'batch'")
        stages = {32: 3, 64: 4, 128: 5}[resolution]
        channels = [min(width * 2**i, width * 8) for i in range(stages)]  # res/2 ... 4x4
        wrap = spectral_norm if norm == "spectral" else (lambda m: m)
        layers: list[nn.Module] = [wrap(nn.Conv2d(3, channels[0], 4, 2, 1)), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers.append(wrap(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm != "batch")))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
        self.features = nn.Sequential(*layers)
        self.head = wrap(nn.Linear(channels[-1] * 16, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1)).squeeze(1)


def read_gan_file(path, expected: str) -> dict:
    """``read_checkpoint`` that also accepts files whose manifest holds a ``TorchVersion`` string."""
    from discovery.checkpoints import read_checkpoint

    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        return read_checkpoint(path, expected=expected)


def plain_manifest(manifest: dict) -> dict:
    """JSON-plain copy of a manifest (str subclasses such as torch's version become str)."""
    import json

    return json.loads(json.dumps(manifest, default=str))


def generator_from_checkpoint(state: dict, name: str = "checkpoint") -> HorseGenerator:
    """Build and load a HorseGenerator from a shippable file's dict or a training snapshot's dict."""
    from discovery.checkpoints import load_state_dict_strict

    expected = f"a {GAN_FORMAT} generator file or a {SNAPSHOT_FORMAT} training snapshot"
    fmt = state.get("format")
    if fmt == GAN_FORMAT:
        weights = state.get("generator_ema")
    elif fmt == SNAPSHOT_FORMAT:
        weights = state.get("G_ema")
    else:
        raise UserError(f"{name}: format {fmt!r} is not {expected}")
    config = dict(state.get("config") or {})
    if not isinstance(weights, dict) or config.get("architecture", "horse-dcgan") != "horse-dcgan":
        raise UserError(f"{name}: holds no horse-dcgan generator weights (expected {expected})")
    try:
        generator = HorseGenerator(
            dim_z=int(config.get("dim_z", 128)), width=int(config.get("width", 32)), resolution=int(config.get("resolution", 64))
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name}: its generator config {config} is not valid ({exc})") from None
    weights = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in weights.items()}
    load_state_dict_strict(generator, weights, expected=f"the horse-dcgan generator of {name}")
    return generator


@register_generator(
    "horse-64",
    description="Small unconditional GAN, 64 px, trained on Weizmann horses (train split, images only); the default",
    weights=WeightsSource(filename="horse64.pt", embedded="weights/horse64.pt",
                          sha256="117f3ddc3e97843ab959b1ea3bbbad86004eff03da36e10a591b76a53c36d9f4"),
)
def build_horse64(weights=None):
    if weights is None:
        raise UserError("horse-64: no weights file given")
    state = read_gan_file(weights, expected=f"a {GAN_FORMAT} generator file")
    return generator_from_checkpoint(state, name=str(weights))
