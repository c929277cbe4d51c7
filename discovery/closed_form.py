"""Closed-form peers of the learned directions: GANSpace and SeFa.

* GANSpace (Härkönen et al., NeurIPS 2020): sample latents, record an early activation of
  the generator, take its principal components, and regress each component's score back
  onto z by least squares; the regression coefficients are the directions in z.
* SeFa (Shen & Zhou, CVPR 2021): the first layer that consumes z is affine, y = W z + b; the
  directions that change y the most are the top eigenvectors of W^T W (rows of W normalised
  to unit length first, as the official code does).

Which layer. A generator may name it: an attribute ``latent_layer`` (a module name, or the
module itself), or a ``latent_weight`` tensor / method returning the (features, dim_z)
matrix. Otherwise the layer is found with forward hooks: the first module, in call order,
with a weight whose input holds the latent z unchanged (a Linear whose input is z or
[z, other], a ConvTranspose2d / 1x1 Conv2d applied to z as a 1x1 map); only the columns of
the weight that multiply z are used (BigGAN-deep's ``gen_z`` also consumes the class
embedding). The procedural test generator has no modules: its latent-to-feature map is its
factor basis (``factors(z) = z @ basis[:5].T``), so SeFa returns an orthonormal basis of the
factor subspace (its five singular values are equal, so SeFa cannot order the factors
within it). GANSpace's default layer (unless the generator names one as ``ganspace_layer``)
is an early activation: after the first module that takes z, the output of the first
activation module (ReLU, LeakyReLU, ...), or - for generators that apply activations as
functions, like BigGAN - of the next linear/convolution layer, whose output is a function of
that first nonlinearity; the generator's images when there are no layers (the procedural
generator). ``layer="latent"`` runs PCA on the sampled latents themselves
(meaningful only for latent distributions that are not isotropic), ``layer="output"`` on
the images, and any other string names a module (``dict(generator.named_modules())``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from discovery.directions import Directions, canonical_signs
from discovery.errors import UserError
from discovery.generators.base import device_for, generate, parameter_dtype, slice_condition
from discovery.registry import explicit_keywords

_WEIGHTED = (nn.Linear, nn.ConvTranspose2d, nn.Conv2d, nn.ConvTranspose1d, nn.Conv1d)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.PReLU, nn.Softplus, nn.Mish, nn.ReLU6, nn.CELU, nn.SELU)


@dataclass
class LatentLayer:
    """The first affine map of z: ``weight`` (features, dim_z) of the columns that multiply z."""

    name: str
    weight: torch.Tensor
    module: nn.Module | None
    call_index: int | None = None  # position of the module among the hooked calls of one forward


class _Stop(Exception):
    pass


def _probe_latents(generator, n=2, seed=12345):
    rng = torch.Generator().manual_seed(seed)
    z = generator.sample_latent(n, rng)
    return z.to(generator.device, parameter_dtype(generator)), generator.sample_condition(n, rng)


def _weight_as_matrix(module: nn.Module, offset: int, dim: int, x: torch.Tensor) -> torch.Tensor | None:
    """(features, dim) columns of the module's weight that multiply input channels offset..offset+dim."""
    weight = module.weight.detach()
    if isinstance(module, nn.Linear):
        return weight[:, offset : offset + dim]
    if isinstance(module, (nn.ConvTranspose2d, nn.ConvTranspose1d)):  # weight (in, out, k...)
        if module.groups != 1:
            return None
        return weight[offset : offset + dim].reshape(dim, -1).T
    if isinstance(module, (nn.Conv2d, nn.Conv1d)):  # weight (out, in, k...): applied to a 1x1 map, only the centre tap acts
        if module.groups != 1 or any(p != 0 for p in _as_tuple(module.padding)) or weight[0, 0].numel() != 1:
            return None
        return weight[:, offset : offset + dim].reshape(weight.shape[0], dim)
    return None


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def _find_offset(x: torch.Tensor, z: torch.Tensor) -> int | None:
    """Channel offset o with x[:, o:o+d] == z (x (N, C) or (N, C, 1[, 1]))."""
    if x.ndim < 2 or x.shape[0] != z.shape[0]:
        return None
    if x.ndim > 2:
        if any(s != 1 for s in x.shape[2:]):
            return None
        x = x.reshape(x.shape[0], x.shape[1])
    d = z.shape[1]
    for offset in range(0, x.shape[1] - d + 1):
        if torch.allclose(x[:, offset : offset + d].to(z.dtype), z, rtol=1e-5, atol=1e-6):
            return offset
    return None


def _trace_calls(generator, z, condition, stop_after=None):
    """Run one forward with hooks on every leaf module; returns [(name, module, input, output)]."""
    calls = []
    handles = []

    def make_hook(name):
        def hook(module, inputs, output):
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            calls.append((name, module, x, output))
            if stop_after is not None and stop_after(calls):
                raise _Stop

        return hook

    for name, module in generator.named_modules():
        if name and not list(module.children()):
            handles.append(module.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad():
            generate(generator, z, condition)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _builtin_latent_weight(generator) -> LatentLayer | None:
    from discovery.generators.procedural import FACTORS, ProceduralGenerator

    if isinstance(generator, ProceduralGenerator):
        return LatentLayer("factors", generator.basis[: len(FACTORS)].detach().clone(), None)
    return None


def find_latent_layer(generator, layers=None) -> LatentLayer:
    """The first affine layer that consumes z (see the module docstring); UserError if there is none.

    ``layers`` goes to a generator whose ``latent_weight(layers)`` stacks several layers' weights
    (StyleGAN's modulations); such a weight may act on a smaller space than the latent (w inside
    W+) when the generator can ``lift_directions`` back into its latent."""
    dim = int(generator.dim_z)
    declared = getattr(generator, "latent_weight", None)
    if layers is not None and not (callable(declared) and "layers" in (explicit_keywords(declared) or ())):
        raise UserError(f"--layers {layers}: generator {getattr(generator, 'name', 'custom')!r} has no layer choice for SeFa "
                        "(it applies to generators with modulated layers, such as stylegan)")
    if declared is not None:
        weight = (declared(layers=layers) if layers is not None else declared()) if callable(declared) else declared
        weight = torch.as_tensor(weight).detach()
        liftable = callable(getattr(generator, "lift_directions", None))
        if weight.ndim != 2 or (weight.shape[1] != dim and not liftable):
            raise UserError(f"generator.latent_weight has shape {tuple(weight.shape)}; expected (features, {dim})")
        return LatentLayer("latent_weight" if layers is None else f"latent_weight[{layers}]", weight, None)
    named = getattr(generator, "latent_layer", None)
    z, condition = _probe_latents(generator)
    calls = _trace_calls(generator, z, condition)
    if named is not None:
        modules = dict(generator.named_modules())
        module = modules.get(named) if isinstance(named, str) else named
        if module is None:
            raise UserError(f"generator.latent_layer {named!r}: no such module")
        for index, (name, called, x, _) in enumerate(calls):
            if called is module and x is not None:
                offset = _find_offset(x, z)
                offset = 0 if offset is None and x.reshape(x.shape[0], -1).shape[1] == dim else offset
                if offset is not None:
                    weight = _weight_as_matrix(module, offset, dim, x)
                    if weight is not None:
                        return LatentLayer(name, weight.clone(), module, index)
        raise UserError(f"generator.latent_layer {named!r}: the layer does not take the latent z as its input")
    for index, (name, module, x, _) in enumerate(calls):
        if x is None or not isinstance(module, _WEIGHTED):
            continue
        offset = _find_offset(x, z)
        if offset is None:
            continue
        weight = _weight_as_matrix(module, offset, dim, x)
        if weight is not None:
            return LatentLayer(name, weight.clone(), module, index)
    builtin = _builtin_latent_weight(generator)
    if builtin is not None:
        return builtin
    raise UserError(
        f"generator {getattr(generator, 'name', 'custom')!r}: no layer takes the latent z directly "
        "(SeFa needs the first latent-to-feature weight); give the generator a `latent_layer` (module name) "
        "or `latent_weight` ((features, dim_z) tensor) attribute"
    )


def _latent_std(generator, directions: torch.Tensor, n: int = 1024, seed: int = 0) -> np.ndarray:
    """Standard deviation of sampled latents along each unit direction (1 for N(0, I))."""
    z = generator.sample_latent(n, torch.Generator().manual_seed(seed)).detach().double().cpu()
    projections = (z - z.mean(0)) @ directions.double().T
    return projections.std(0).numpy()


# ----------------------------------------------------------------------------------------------
# SeFa


def discover_sefa(generator, *, top_k: int | None = None, normalize: bool = True, layers=None) -> Directions:
    """SeFa: top eigenvectors of W^T W for the first latent-to-feature weight W (features, dim_z).

    ``stats["eigenvalues"]`` (K) are those of W^T W; ``shift_scale`` is 3 standard deviations
    of the latent distribution along the directions (SeFa's own range is +/-3 for N(0, I)).
    """
    from discovery.io import run_manifest

    started = time.perf_counter()
    dim = int(generator.dim_z)
    layer = find_latent_layer(generator, layers)
    weight = layer.weight.detach().double().cpu()
    space_dim = int(weight.shape[1])  # the latent size, or w's inside W+
    if top_k is not None and not 1 <= top_k <= space_dim:
        raise UserError(f"--top-k {top_k}: must be between 1 and the size {space_dim} of the space SeFa factorises")
    if normalize:
        weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    values, vectors = torch.linalg.eigh(weight.T @ weight)
    values, vectors = values.flip(0), vectors.flip(1).T
    k = top_k or space_dim
    matrix = canonical_signs(vectors[:k])
    if space_dim != dim:
        matrix = generator.lift_directions(matrix, layers).double()
    std = _latent_std(generator, matrix)
    total = float(values.clamp_min(0).sum())
    return Directions(
        matrix=matrix.float(),
        generator=getattr(generator, "name", "custom"),
        method="sefa",
        shift_scale=float(3.0 * np.median(std)),
        stats={
            "eigenvalues": values[:k].tolist(),
            "explained_variance": (values[:k].clamp_min(0) / total).tolist() if total > 0 else [0.0] * k,
            "shift_scales": (3.0 * std).tolist(),
        },
        manifest=run_manifest(method="sefa", layer=layer.name, weight_shape=list(layer.weight.shape), normalize=normalize,
                              top_k=k, layers=layers, seconds=time.perf_counter() - started),
    )


# ----------------------------------------------------------------------------------------------
# GANSpace


def _is_layer(module: nn.Module) -> bool:
    """A linear or convolution layer, the package's own (spectral-norm) variants included."""
    name = type(module).__name__
    return isinstance(module, _WEIGHTED) or "Linear" in name or "Conv" in name


def _default_ganspace_layer(generator) -> str:
    """Name of the early activation GANSpace uses when the caller names none.

    The generator's ``ganspace_layer`` attribute; else, after the first module that takes z,
    the first activation module, or (for generators that apply activations as functions)
    the first linear/convolution layer that does not take z - its output is a function of
    the first nonlinearity; else that first module itself; else the images ("output")."""
    declared = getattr(generator, "ganspace_layer", None)
    if declared:
        return declared
    if not any(True for _ in generator.modules() if _ is not generator):
        return "output"
    z, condition = _probe_latents(generator)
    calls = _trace_calls(generator, z, condition)
    takes_z = [x is not None and _find_offset(x, z) is not None for _, _, x, _ in calls]
    if True not in takes_z:
        first_activation = next((name for name, module, _, _ in calls if isinstance(module, _ACTIVATIONS)), None)
        return first_activation or "output"
    start = takes_z.index(True)
    for (name, module, _, _), consumes in zip(calls[start + 1 :], takes_z[start + 1 :], strict=True):
        if isinstance(module, _ACTIVATIONS) or (not consumes and _is_layer(module)):
            return name
    return calls[start][0]


def _collect_features(generator, layer: str, latents: torch.Tensor, conditions, batch_size: int) -> torch.Tensor:
    def batch_condition(start, stop):
        return slice_condition(conditions, start, stop)

    features = []
    n = latents.shape[0]
    if layer == "latent":
        return latents.reshape(n, -1).float().cpu()
    if layer == "output":
        with torch.no_grad():
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                features.append(generate(generator, latents[start:stop], batch_condition(start, stop)).reshape(stop - start, -1).float().cpu())
        return torch.cat(features)
    modules = dict(generator.named_modules())
    if layer not in modules:
        known = ", ".join(name for name, m in generator.named_modules() if name)[:400]
        raise UserError(f"--layer {layer!r}: no such module in the generator (known: latent, output, {known})")
    module = modules[layer]
    captured = {}

    def hook(_, __, output):
        captured["x"] = output[0] if isinstance(output, (tuple, list)) else output
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                captured.clear()
                try:
                    generate(generator, latents[start:stop], batch_condition(start, stop))
                except _Stop:
                    pass
                if "x" not in captured:
                    raise UserError(f"--layer {layer!r}: the module does not run in the generator's forward pass")
                features.append(captured["x"].reshape(stop - start, -1).float().cpu())
    finally:
        handle.remove()
    return torch.cat(features)


def principal_components(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Top-k principal axes of the rows of x: (components (k, F), variances (k,), total variance)."""
    n, f = x.shape
    x = x - x.mean(0)
    total = float(x.pow(2).sum() / max(n - 1, 1))
    k = min(k, n, f)
    if min(n, f) <= 2048:
        x64 = x.double()
        if f <= n:
            values, vectors = torch.linalg.eigh(x64.T @ x64)
            values, components = values.flip(0)[:k], vectors.flip(1).T[:k]
        else:
            values, vectors = torch.linalg.eigh(x64 @ x64.T)
            values, u = values.flip(0)[:k], vectors.flip(1)[:, :k]
            components = (x64.T @ u / values.clamp_min(1e-30).sqrt()).T
            components = components / components.norm(dim=1, keepdim=True).clamp_min(1e-30)
        return components.float(), (values.clamp_min(0) / max(n - 1, 1)).float(), total
    q = min(k + 10, n, f)
    _, s, v = torch.pca_lowrank(x, q=q, center=False, niter=6)
    return v.T[:k].contiguous(), (s[:k] ** 2 / max(n - 1, 1)), total


def discover_ganspace(generator, *, samples: int = 4096, layer: str | None = None, top_k: int | None = None, seed: int = 0,
                      device=None, batch_size: int = 64) -> Directions:
    """GANSpace: PCA of an early activation over ``samples`` latents, regressed back to z.

    Rows are the regression directions (unit norm) of the top principal components, largest
    variance first. ``stats``: "explained_variance" (fraction of the layer's total variance),
    "variance", "regression_r2" (how linearly z explains each component), "shift_scales"
    (a shift that moves the component by 2 of its standard deviations), all of length K.
    """
    from discovery.io import run_manifest

    started = time.perf_counter()
    dim = int(generator.dim_z)
    if samples < 2:
        raise UserError(f"--samples {samples}: GANSpace needs at least 2 latents")
    if top_k is not None and not 1 <= top_k <= dim:
        raise UserError(f"--top-k {top_k}: must be between 1 and the latent size {dim}")
    device = device_for(device, generator)
    generator = generator.to(device)
    layer = layer or _default_ganspace_layer(generator)
    rng = torch.Generator().manual_seed(seed)
    latents = generator.sample_latent(samples, rng).to(device=device, dtype=parameter_dtype(generator))
    conditions = generator.sample_condition(samples, rng)
    features = _collect_features(generator, layer, latents, conditions, batch_size)
    k = min(top_k or dim, samples - 1, features.shape[1])
    components, variances, total = principal_components(features, k)
    if top_k is None and variances.numel() and float(variances[0]) > 0:
        # components past the features' rank carry no variance (e.g. StyleGAN's W+, where sampled
        # latents repeat one w per layer): keep only those that explain something
        k = max(1, int((variances > 1e-6 * variances[0]).sum()))
        components, variances = components[:k], variances[:k]
    centered = features - features.mean(0)
    scores = (centered.double() @ components.double().T)  # (N, k)
    z = latents.detach().double().cpu()
    z = z - z.mean(0)
    coefficients = torch.linalg.lstsq(z, scores).solution  # (dim, k): score ~ z @ coefficients
    residual = scores - z @ coefficients
    r2 = 1 - residual.pow(2).sum(0) / scores.pow(2).sum(0).clamp_min(1e-30)
    norms = coefficients.norm(dim=0).clamp_min(1e-30)
    matrix = canonical_signs((coefficients / norms).T)
    std = _latent_std(generator, matrix, seed=seed)
    per_direction = (2 * variances.double().sqrt() / norms).clamp(max=3 * math.sqrt(dim))
    return Directions(
        matrix=matrix.float(),
        generator=getattr(generator, "name", "custom"),
        method="ganspace",
        shift_scale=float(3.0 * np.median(std)),
        stats={
            "explained_variance": (variances.double() / max(total, 1e-30)).tolist(),
            "variance": variances.double().tolist(),
            "regression_r2": r2.tolist(),
            "shift_scales": per_direction.tolist(),
        },
        manifest=run_manifest(method="ganspace", layer=layer, samples=samples, features=int(features.shape[1]), top_k=k,
                              seed=seed, device=str(device), seconds=time.perf_counter() - started),
    )


from discovery.methods import SHIFT_SCALE_OPTION, MethodOption, override_shift_scale, register_method  # noqa: E402  (registration at the end of the module)


@register_method(
    "ganspace",
    description="GANSpace (Härkönen et al. 2020): PCA of early generator features, regressed back to z",
    options=(
        MethodOption("samples", "latents sampled for the PCA", int),
        MethodOption("layer", "feature layer (None: the first after the latent layer; 'latent': PCA of z itself)", str),
        MethodOption("top_k", "keep the top-k components (None: all)", int),
        MethodOption("batch_size", "latents per generator call", int),
        SHIFT_SCALE_OPTION,
    ),
)
def run_ganspace(generator, out_dir=None, *, samples: int = 4096, layer: str | None = None, top_k: int | None = None,
                 batch_size: int = 64, shift_scale: float | None = None, seed: int = 0, device=None) -> Directions:
    directions = discover_ganspace(generator, samples=samples, layer=layer, top_k=top_k, seed=seed, device=device, batch_size=batch_size)
    return override_shift_scale(directions, shift_scale)


@register_method(
    "sefa",
    description="SeFa (Shen & Zhou 2021): eigenvectors of W^T W of the first latent-to-feature layer, closed form",
    options=(
        MethodOption("top_k", "keep the top-k directions (None: all)", int),
        MethodOption("layers", "StyleGAN: the modulated layers whose weights are factorised, e.g. 0-3 (None: all)", str),
        SHIFT_SCALE_OPTION,
    ),
)
def run_sefa(generator, out_dir=None, *, top_k: int | None = None, layers: str | None = None,
             shift_scale: float | None = None) -> Directions:
    directions = discover_sefa(generator, top_k=top_k, layers=layers)
    return override_shift_scale(directions, shift_scale)
