"""Reconstructors: from an image and its shifted copy, predict which direction moved it and how far.

Both take the two images (N, 3, H, W) in [-1, 1], concatenate them into 6 channels and
return ``(logits (N, K), shift (N,))``. ResNet-18 (random init, 6-channel first convolution)
is the paper's choice for real generators; the LeNet-size network is the official code's
choice for small images (MNIST, anime 32 px) and is what the tests use.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from discovery.errors import UserError

RECONSTRUCTOR_TYPES = ("auto", "lenet", "resnet18")


class LeNetReconstructor(nn.Module):
    """Three 5x5 convolutions and two small heads; inputs below 32 px are upsampled to 32 px."""

    min_size = 32

    def __init__(self, count: int, channels: int = 3, width: int = 2):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2 * channels, 3 * width, 5), nn.BatchNorm2d(3 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(3 * width, 8 * width, 5), nn.BatchNorm2d(8 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8 * width, 60 * width, 5), nn.BatchNorm2d(60 * width), nn.ReLU(),
        )  # fmt: skip

        def head(outputs: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(60 * width, 42 * width), nn.BatchNorm1d(42 * width), nn.ReLU(), nn.Linear(42 * width, outputs))

        self.logits = head(count)
        self.shift = head(1)

    def forward(self, original: torch.Tensor, shifted: torch.Tensor):
        x = torch.cat([original, shifted], dim=1)
        if min(x.shape[-2:]) < self.min_size:
            x = F.interpolate(x, size=(max(self.min_size, x.shape[-2]), max(self.min_size, x.shape[-1])), mode="bilinear", align_corners=False)
        features = self.features(x).mean(dim=(-2, -1))
        return self.logits(features), self.shift(features).squeeze(1)


class ResNetReconstructor(nn.Module):
    """torchvision ResNet-18, random init, 6 input channels, a K-way head and a shift head."""

    def __init__(self, count: int, channels: int = 3, resolution: int | None = None):
        super().__init__()
        from torchvision.models import resnet18

        self.backbone = resnet18(weights=None)
        self.backbone.conv1 = nn.Conv2d(2 * channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.backbone.fc = nn.Identity()
        self.logits = nn.Linear(512, count)
        self.shift = nn.Linear(512, 1)
        self.resolution = resolution  # images larger than this are resized down first (None: never)

    def forward(self, original: torch.Tensor, shifted: torch.Tensor):
        x = torch.cat([original, shifted], dim=1)
        if self.resolution is not None and max(x.shape[-2:]) > self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=True)
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.backbone(x)
        return self.logits(features), self.shift(features).squeeze(1)


def build_reconstructor(kind: str, count: int, image_resolution: int, *, resolution: int | None = None) -> nn.Module:
    """``auto`` is ResNet-18 for images of 64 px and more, LeNet below."""
    if kind not in RECONSTRUCTOR_TYPES:
        raise UserError(f"--reconstructor {kind!r}: unknown (expected one of {', '.join(RECONSTRUCTOR_TYPES)})")
    if kind == "auto":
        kind = "resnet18" if min(image_resolution, resolution or image_resolution) >= 64 else "lenet"
    if kind == "lenet":
        return LeNetReconstructor(count)
    return ResNetReconstructor(count, resolution=resolution)
