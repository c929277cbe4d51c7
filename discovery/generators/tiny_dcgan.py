"""A small DCGAN with seeded random weights: deterministic, download-free, for tests and smoke runs."""

from __future__ import annotations

import torch
from torch import nn

from discovery.generators.base import LatentGenerator
from discovery.generators.registry import register_generator


class TinyDCGAN(LatentGenerator):
    def __init__(self, dim_z: int = 32, resolution: int = 32, width: int = 32, seed: int = 0):
        super().__init__()
        if resolution not in (16, 32, 64):
            raise ValueError("resolution must be 16, 32 or 64")
        self.dim_z, self.resolution = dim_z, resolution
        upsamplings = {16: 2, 32: 3, 64: 4}[resolution]
        channels = [width * 2 ** (upsamplings - i) for i in range(upsamplings + 1)]
        layers: list[nn.Module] = [nn.ConvTranspose2d(dim_z, channels[0], 4, 1, 0), nn.BatchNorm2d(channels[0]), nn.ReLU()]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.Conv2d(channels[-1], 3, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.net.modules():
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.08)
                    module.bias.zero_()

    def forward(self, z, condition=None):
        return self.net(z[:, :, None, None])


@register_generator("tiny-dcgan", description="Untrained DCGAN with seeded weights (tests, smoke runs)", takes_weights=True)
def build_tiny_dcgan(weights=None, dim_z: int = 32, resolution: int = 32, seed: int = 0):
    generator = TinyDCGAN(dim_z=dim_z, resolution=resolution, seed=seed)
    if weights is not None:
        from discovery.checkpoints import load_state_dict_strict

        load_state_dict_strict(generator, weights)
    return generator
