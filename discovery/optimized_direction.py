"""An optimised background direction (Melas-Kyriazi, Rupprecht, Laina & Vedaldi, ICLR 2022,
"Finding an Unsupervised Image Segmenter in Each of Your Deep Generative Models").

Instead of searching among many discovered directions for one that happens to separate object and
background, one unit direction is optimised for exactly that: for latents z and shifts
r ~ clip(N(2, 0.5), min 0.1),

    contrast(v) = mean(P * (g(G(z + r v)) - g(G(z)))) - mean((1 - P) * (g(G(z + r v)) - g(G(z))))
    edges(v)    = mean |sobel(g(G(z + r v))) - sobel(g(G(z)))|
    loss(v)     = -s * contrast(v) + edge_weight * edges(v)

with g the luma in [0, 1], P a centred Gaussian prior (objects tend to be central) and
s = +1 for ``v_l`` (the object lightens, the background darkens) and s = -1 for its partner ``v_d``
(the object darkens). The Sobel term keeps the image's structure, so the shift relights the
picture rather than changing what it shows. Adam (lr 5e-3, batch 32, 300 steps: the paper's
recipe) on an unconstrained vector, normalised to unit length in the forward pass.

The directions file holds the two rows [v_l, v_d], records v_l as the background direction (its
+ shift dims the background) with v_d as its ``partner`` for the two-direction mask rule
(foreground where G(z + r v_l) is brighter than G(z + r v_d), r = 5), and ``shift_scale`` 6, so the
mask rules use the papers' shifts (5, 26) directly on the unit vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from discovery.directions import Directions
from discovery.errors import UserError
from discovery.generators.base import device_for, generate, parameter_dtype
from discovery.methods import MethodOption, register_method
from discovery.runtime import get_logger, progress_bar

log = get_logger("melas-kyriazi")
SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def luma01(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 1, H, W) luma in [0, 1]."""
    images = (images.float() + 1) / 2
    if images.shape[1] == 1:
        return images
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def sobel_magnitude(gray: torch.Tensor) -> torch.Tensor:
    kernels = torch.stack([SOBEL, SOBEL.T])[:, None].to(gray.device, gray.dtype)
    gradients = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    return (gradients.pow(2).sum(1, keepdim=True) + 1e-8).sqrt()


def centre_prior(size: int, sigma: float, device) -> torch.Tensor:
    """A centred Gaussian in [0, 1] of standard deviation ``sigma`` (a fraction of the image side)."""
    axis = torch.linspace(-0.5, 0.5, size, device=device)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))[None, None]


def optimise_direction(generator, sign: int, *, steps: int, lr: float, batch_size: int, shift_mean: float, shift_std: float,
                       shift_min: float, edge_weight: float, prior_sigma: float, seed: int, device, progress: bool) -> tuple[torch.Tensor, list]:
    """One unit direction for ``sign`` (+1: lighten the prior's region, -1: darken it); returns it and the loss history."""
    dtype = parameter_dtype(generator)
    rng = torch.Generator().manual_seed(seed)
    raw = torch.randn(generator.dim_z, generator=rng).to(device)
    raw = (raw / raw.norm()).requires_grad_(True)
    optimiser = torch.optim.Adam([raw], lr=lr)
    prior = centre_prior(int(generator.resolution), prior_sigma, device)
    history = []
    bar = progress_bar(steps, desc=f"direction {'+' if sign > 0 else '-'}", unit="step", enabled=progress)
    for step in range(steps):
        z = generator.sample_latent(batch_size, rng).to(device=device, dtype=dtype)
        condition = generator.sample_condition(batch_size, rng)
        r = torch.clamp(torch.randn(batch_size, 1, generator=rng) * shift_std + shift_mean, min=shift_min).to(device=device, dtype=dtype)
        v = raw / raw.norm()
        with torch.no_grad():
            original = luma01(generate(generator, z, condition))
        shifted = luma01(generate(generator, z + r * v.to(dtype), condition))
        change = shifted - original
        contrast = (prior * change).mean() - ((1 - prior) * change).mean()
        edges = (sobel_magnitude(shifted) - sobel_magnitude(original)).abs().mean()
        loss = -sign * contrast + edge_weight * edges
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.append({"step": step + 1, "loss": float(loss.detach()), "contrast": float(contrast.detach()), "edges": float(edges.detach())})
        bar.update(1)
        bar.set_postfix(contrast=f"{history[-1]['contrast']:+.4f}")
    bar.close()
    with torch.no_grad():
        return (raw / raw.norm()).detach().float().cpu(), history


@register_method(
    "melas-kyriazi",
    description="Melas-Kyriazi et al. 2022: one direction optimised to lighten a centre prior (and its darkening partner), "
                "edges kept by a Sobel term",
    options=(
        MethodOption("steps", "Adam steps per direction (paper: 300)", int),
        MethodOption("lr", "Adam learning rate (paper: 5e-3)", float),
        MethodOption("batch_size", "latents per step (paper: 32)", int),
        MethodOption("shift_mean", "shifts r ~ clip(N(mean, std), min) during the optimisation (paper: 2)", float),
        MethodOption("shift_std", "their standard deviation (paper: 0.5)", float),
        MethodOption("shift_min", "their minimum (paper: 0.1)", float),
        MethodOption("edge_weight", "weight of the Sobel edge-consistency term", float),
        MethodOption("prior_sigma", "standard deviation of the centred Gaussian prior, a fraction of the image side", float),
    ),
)
def run_melas_kyriazi(generator, out_dir=None, *, steps: int = 300, lr: float = 5e-3, batch_size: int = 32, shift_mean: float = 2.0,
                      shift_std: float = 0.5, shift_min: float = 0.1, edge_weight: float = 0.1, prior_sigma: float = 0.25, seed: int = 0,
                      device=None, progress: bool = True) -> tuple:
    from discovery.io import run_manifest

    for name, value in (("--steps", steps), ("--batch-size", batch_size)):
        if int(value) < 1:
            raise UserError(f"{name} {value}: must be at least 1")
    if not lr > 0 or not prior_sigma > 0 or edge_weight < 0 or shift_std < 0:
        raise UserError("--lr and --prior-sigma must be positive, --edge-weight and --shift-std not negative")
    device = device_for(device, generator)
    generator = generator.to(device)
    options = dict(steps=steps, lr=lr, batch_size=batch_size, shift_mean=shift_mean, shift_std=shift_std, shift_min=shift_min,
                   edge_weight=edge_weight, prior_sigma=prior_sigma, device=device, progress=progress)
    log.info("Optimise the lightening direction v_l...")
    lighten, history_l = optimise_direction(generator, +1, seed=seed, **options)
    log.info("Optimise its darkening partner v_d...")
    darken, history_d = optimise_direction(generator, -1, seed=seed + 1, **options)
    directions = Directions(
        torch.stack([lighten, darken]), getattr(generator, "name", "custom"), "melas-kyriazi", shift_scale=6.0,
        stats={"final_contrast": [history_l[-1]["contrast"], history_d[-1]["contrast"]],
               "final_edges": [history_l[-1]["edges"], history_d[-1]["edges"]]},
        manifest=run_manifest(method="melas-kyriazi", **{k: v for k, v in options.items() if k not in ("device", "progress")}, seed=seed),
        labels={0: "lighten the object (background dimmed)", 1: "darken the object"},
    )
    directions.set_background(0, 1, "melas-kyriazi objective")
    directions.background["partner"] = 1
    summary = {"loss_history": {"lighten": history_l[:: max(1, steps // 50)], "darken": history_d[:: max(1, steps // 50)]},
               "cosine_between": float(lighten @ darken)}
    return directions, summary
