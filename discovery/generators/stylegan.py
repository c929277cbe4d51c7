"""The registered ``stylegan`` generator: StyleGAN2 / StyleGAN3 from the files users hold, in Z, W or W+.

``--space`` says what the package's latent (the vector every method shifts) is:

* ``z``: the input of the mapping network; ``G(z) = synthesis(truncate(mapping(z)))``.
* ``w``: one intermediate latent, drawn as ``truncate(mapping(z))``; ``G(w)`` feeds it to every
  synthesis layer. Shifts are applied after truncation.
* ``w+``: one w per synthesis layer (``num_ws * w_dim`` numbers), drawn as the broadcast w; a
  shift may move each layer's w differently.

For a conditional pickle in W or W+, the class (``--classes``, default all) is drawn with z and
is part of w, so the latent alone decides the image; in Z it is the generator's condition.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from discovery.errors import UserError
from discovery.generators.base import LatentGenerator
from discovery.generators.registry import WeightsSource, register_generator
from discovery.generators.stylegan_files import read_stylegan_checkpoint

SPACES = ("z", "w", "w+")
NOISE_MODES = ("const", "random", "none")


def parse_layers(spec, num_layers: int, where: str = "--layers") -> list[int]:
    """'all', an index, or a comma list of indices and ranges ('0-3,8') of the w's feeding synthesis layers."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(num_layers))
    items = [spec] if isinstance(spec, int) else list(spec) if isinstance(spec, (list, tuple)) else str(spec).split(",")
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", text)
        if not match:
            raise UserError(f"{where} {spec!r}: expected 'all' or indices and ranges such as 0-3,8")
        lo, hi = int(match[1]), int(match[2] or match[1])
        if lo > hi or hi >= num_layers:
            raise UserError(f"{where} {spec!r}: layer indices run from 0 to {num_layers - 1}")
        out.extend(i for i in range(lo, hi + 1) if i not in out)
    return out


class StyleGANGenerator(LatentGenerator):
    """A StyleGAN2/3 network as a LatentGenerator whose latent lives in ``space``."""

    def __init__(self, network, *, space: str = "w", truncation: float = 1.0, noise_mode: str = "const", classes=None,
                 name: str = "stylegan", architecture: str = "stylegan2", config: str = ""):
        super().__init__()
        if space not in SPACES:
            raise UserError(f"--space {space!r}: expected one of {', '.join(SPACES)}")
        if noise_mode not in NOISE_MODES:
            raise UserError(f"--noise-mode {noise_mode!r}: expected one of {', '.join(NOISE_MODES)}")
        truncation = float(truncation)
        if not math.isfinite(truncation):
            raise UserError(f"--truncation {truncation}: must be a finite number (psi; 1 = no truncation)")
        self.network = network
        self.space, self.truncation, self.noise_mode = space, truncation, noise_mode
        self.architecture, self.config = architecture, config
        self.num_ws, self.w_dim, self.z_dim, self.c_dim = network.num_ws, network.w_dim, network.z_dim, network.c_dim
        self.resolution = network.img_resolution
        self.name = name
        self.dim_z = {"z": self.z_dim, "w": self.w_dim, "w+": self.num_ws * self.w_dim}[space]
        self.conditional = self.c_dim > 0 and space == "z"
        if classes is not None and self.c_dim == 0:
            raise UserError(f"--classes {classes}: this {architecture} pickle is unconditional")
        self.policy = None
        if self.c_dim > 0:
            from discovery.imagenet import ClassPolicy

            self.policy = ClassPolicy(classes, self.c_dim, names=False)  # dataset label indices, not ImageNet names
        self.classes = self.policy.indices if self.policy is not None else None
        if space == "z":
            self.ganspace_layer = f"network.mapping.fc{network.mapping.num_layers - 1}"
        else:
            self.ganspace_layer = "latent"  # GANSpace's own choice for StyleGAN: PCA of sampled w

    # --- latents -----------------------------------------------------------------------------------

    def _one_hot(self, labels) -> torch.Tensor | None:
        if self.c_dim == 0:
            return None
        labels = torch.as_tensor(labels)
        if labels.ndim == 2:  # already label vectors
            return labels.float().to(self.device)
        return F.one_hot(labels.long(), self.c_dim).float().to(self.device)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.z_dim, generator=generator)
        if self.space == "z":
            return z.to(self.device)
        labels = self.policy.sample(n, generator) if self.c_dim > 0 else None
        with torch.no_grad():
            ws = self.network.mapping(z.to(self.device), self._one_hot(labels) if labels is not None else None,
                                      truncation_psi=self.truncation)
        return ws[:, 0] if self.space == "w" else ws.reshape(n, -1)

    def sample_condition(self, n: int, generator: torch.Generator | None = None):
        if not self.conditional:
            return None
        return self.policy.sample(n, generator).to(self.device)

    def ws(self, latent: torch.Tensor, condition=None) -> torch.Tensor:
        """The (N, num_ws, w_dim) intermediate latents the synthesis network gets for ``latent``."""
        if self.space == "z":
            c = self._one_hot(condition) if self.c_dim > 0 else None
            if self.c_dim > 0 and c is None:  # a plain G(z) call: the first allowed class
                c = self._one_hot(torch.full((latent.shape[0],), (self.classes or [0])[0]))
            return self.network.mapping(latent, c, truncation_psi=self.truncation)
        if self.space == "w":
            return latent.float().unsqueeze(1).repeat(1, self.num_ws, 1)
        return latent.float().reshape(latent.shape[0], self.num_ws, self.w_dim)

    def forward(self, latent: torch.Tensor, condition=None) -> torch.Tensor:
        images = self.network.synthesis(self.ws(latent, condition), noise_mode=self.noise_mode)
        return images.clamp(-1, 1)  # NVlabs' image conversion clamps the same range

    # --- SeFa --------------------------------------------------------------------------------------

    def style_layers(self) -> list[tuple[str, int]]:
        """(modulated layer, index of the w it takes) in synthesis order."""
        names = [name for name, _ in self.network.synthesis.layer_channels()]
        offset = 1 if self.architecture == "stylegan3" else 0  # StyleGAN3's w 0 drives the Fourier input
        return [(name, index + offset) for index, name in enumerate(names)]

    def latent_weight(self, layers=None) -> torch.Tensor:
        """SeFa's matrix: the modulation (affine) weights of the chosen layers, stacked (features, w_dim)."""
        if self.space == "z":
            raise UserError("sefa on StyleGAN: the modulation weights act on w, not z; use --space w or --space w+")
        chosen = self._chosen_layers(layers)
        modules = dict(self.network.synthesis.named_modules())
        return torch.cat([modules[name].affine.weight.detach().float().cpu() for name, _ in chosen])

    def _chosen_layers(self, layers):
        known = self.style_layers()
        return [known[i] for i in parse_layers(layers, len(known))]

    def lift_directions(self, directions: torch.Tensor, layers=None) -> torch.Tensor:
        """Directions in w (K, w_dim) as latents of this space: in W+ the same shift on the chosen layers' w only."""
        if self.space == "w":
            return directions
        lifted = torch.zeros(directions.shape[0], self.num_ws, self.w_dim, dtype=directions.dtype)
        for _, index in self._chosen_layers(layers):
            lifted[:, index] = directions
        lifted = lifted.reshape(directions.shape[0], -1)
        return lifted / lifted.norm(dim=1, keepdim=True)

    def describe(self) -> dict:
        return {**super().describe(), "architecture": self.architecture, "config": self.config, "space": self.space,
                "truncation": self.truncation, "noise_mode": self.noise_mode, "num_ws": self.num_ws, "w_dim": self.w_dim}


@register_generator(
    "stylegan",
    description="StyleGAN2 / StyleGAN3 (T, R) from an NVlabs network pickle or a rosinality .pt; --space z|w|w+",
    weights=WeightsSource(
        filename="network.pkl",
        note="any stylegan2-ada-pytorch or stylegan3 network pickle (e.g. stylegan3-t-ffhq-1024x1024.pkl from "
        "https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/stylegan3) or a rosinality stylegan2-pytorch .pt",
    ),
)
def build_stylegan(weights=None, space: str = "w", truncation: float | None = None, noise_mode: str = "const", classes=None,
                   network_key: str | None = None, channel_multiplier: int | None = None, size: int | None = None):
    if weights is None:
        raise UserError("stylegan: needs --weights PATH (an NVlabs .pkl network pickle or a rosinality .pt checkpoint)")
    checkpoint = read_stylegan_checkpoint(weights, network_key, channel_multiplier=channel_multiplier, size=size)
    network = checkpoint.build().eval().requires_grad_(False)
    generator = StyleGANGenerator(network, space=space, truncation=1.0 if truncation is None else truncation, noise_mode=noise_mode,
                                  classes=classes, architecture=checkpoint.architecture, config=checkpoint.config)
    generator.checkpoint_notes = list(checkpoint.notes)
    return generator
