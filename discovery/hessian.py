"""The Hessian geometry of a generator's latent space (Wang & Ponce, ICLR 2021, arXiv 2101.06006).

For an image distance D, the metric tensor of the latent space at z is

    H(z) = d^2/dz'^2 D(G(z), G(z'))  at z' = z,

a (dim_z, dim_z) positive semi-definite matrix: moving z by a small step v changes the image
by D ~ 1/2 v^T H(z) v. Its top eigenvectors are the directions the image is most sensitive
to; averaged over many z they give global, often interpretable, axes.

How H is computed here:

* Hessian-vector products by forward-over-reverse differentiation,
  ``torch.func.jvp(torch.func.grad(f), (z,), (v,))``, batched over many v with
  ``torch.func.vmap`` (``batch_size`` products at a time);
* the full Hessian (``exact``, the default up to ``EXACT_MAX_DIM`` latent dimensions) is, for
  the squared distances (pixel MSE, feature MSE), 2 J^T J / n from d batched forward-mode JVPs
  (exact at z' = z, and cheaper), and otherwise the HVPs with all basis vectors; the top-k eigenpairs of a large latent space come from
  Lanczos iterations (``scipy.sparse.linalg.eigsh``) on the same HVPs;
* ``hessian_backward_loop`` is the approach of the paper's official code (one double
  backward pass per basis vector), kept as the baseline of ``benchmarks/hessian_speed.py``.

Distances: ``discovery.distances`` (pixel MSE, feature MSE, LPIPS, any callable). The
spectrum report (eigenvalue decay, homogeneity across latents): ``discovery.spectrum``.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from discovery.directions import Directions, canonical_signs
from discovery.distances import (
    _distance_modules,
    _FeatureDistance,
    _groups,
    _mse,
    load_feature_net,
    make_distance,
)
from discovery.errors import UserError
from discovery.generators.base import device_for, generate, parameter_dtype
from discovery.spectrum import anisotropy_measures, homogeneity_measures, write_spectrum_report  # noqa: F401  (the report: API)

EXACT_MAX_DIM = 256  # full Hessians up to this latent size; Lanczos above
LANCZOS_DEFAULT_K = 40  # eigenpairs Lanczos computes when top_k is not given
HOMOGENEITY_MAX_K = 20  # eigenpairs per latent for the homogeneity measure in Lanczos mode
TARGET_FRACTION = 0.25  # shift_scale: a shift changes the image by this fraction of the distance between two samples


# ----------------------------------------------------------------------------------------------
# Hessian-vector products, full Hessians, Lanczos


def latent_distance(generator, z: torch.Tensor, condition=None, distance="mse", feature_net=None) -> Callable:
    """``f(z') = D(G(z), G(z'))`` for one latent ``z`` (shape (dim_z,)); H(z) is its Hessian at z.

    ``condition`` is the condition of this one latent (batch of 1) for conditional generators;
    ``distance`` is a name or a callable from ``make_distance``.
    """
    distance_fn = distance if callable(distance) and not isinstance(distance, str) else make_distance(distance, feature_net)
    with torch.no_grad():
        reference = generate(generator, z[None], condition).detach()

    def f(z_prime: torch.Tensor) -> torch.Tensor:
        return distance_fn(reference, generate(generator, z_prime[None], condition))

    return f


@contextlib.contextmanager
def _quiet():
    """torch scripts its forward-mode decompositions on the first jvp and warns that scripting is deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)
        yield


def hessian_vector_products(f: Callable, z: torch.Tensor, vectors: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
    """(m, d) rows H v_i for the rows v_i of ``vectors``: forward-over-reverse, ``batch_size`` at a time."""
    from torch.func import grad, jvp, vmap

    def hvp(v):
        return jvp(grad(f), (z,), (v,))[1]

    vectors = vectors.to(z.device, z.dtype)
    # no_grad outside the transforms: nothing records a graph for parameters that require grad
    # (a user's feature network), while grad/jvp inside still differentiate with respect to z.
    with _quiet(), torch.no_grad():
        return vmap(hvp, chunk_size=max(1, int(batch_size)))(vectors)


def exact_hessian(f: Callable, z: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
    """The full (d, d) Hessian of ``f`` at ``z`` from d batched HVPs with the basis vectors (symmetrised)."""
    eye = torch.eye(z.numel(), device=z.device, dtype=z.dtype)
    hessian = hessian_vector_products(f, z, eye, batch_size=batch_size)
    return (hessian + hessian.T) / 2


def jacobian_hessian(generator, z: torch.Tensor, condition, distance_fn, *, batch_size: int = 16) -> torch.Tensor | None:
    """H(z) = sum_g 2 J_g^T J_g / n_g from the Jacobian of the embedding, for squared distances.

    For D(z, z') = sum_g mean((phi_g(G(z')) - phi_g(G(z)))^2) (pixel MSE: phi = identity; the
    feature distance: phi = the network) the Hessian at z' = z is exactly the Gauss-Newton
    term, since the residual vanishes there. The Jacobian takes d batched forward-mode JVPs,
    cheaper than d forward-over-reverse HVPs (2-5x on CPU, see benchmarks/hessian_speed.py).
    Returns None for distances not of that form (LPIPS, user callables): use HVPs then.
    """
    from torch.func import jvp, vmap

    if distance_fn is _mse:
        embed = _identity
    elif isinstance(distance_fn, _FeatureDistance):
        embed = distance_fn.net
    else:
        return None

    def outputs(x):
        return tuple(t.flatten() for t in _groups(embed(generate(generator, x[None], condition))))

    def column(v):
        return jvp(outputs, (z,), (v,))[1]

    eye = torch.eye(z.numel(), device=z.device, dtype=z.dtype)
    with _quiet(), torch.no_grad():
        jacobians = vmap(column, chunk_size=max(1, int(batch_size)))(eye)  # per group: (d, n_g)
    return sum(2 * J @ J.T / J.shape[1] for J in jacobians)


def _identity(images: torch.Tensor) -> torch.Tensor:
    return images


def hessian_backward_loop(f: Callable, z: torch.Tensor) -> torch.Tensor:
    """The full Hessian the way the paper's official code does it: gradient with ``create_graph``,
    then one backward pass per latent coordinate. The baseline of ``benchmarks/hessian_speed.py``."""
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        gradient = torch.autograd.grad(f(z), z, create_graph=True)[0]
        rows = [torch.autograd.grad(gradient[i], z, retain_graph=True)[0] for i in range(z.numel())]
    hessian = torch.stack(rows).detach()
    return (hessian + hessian.T) / 2


def lanczos_top_eigenpairs(matvec: Callable[[np.ndarray], np.ndarray], dim: int, k: int, *, tol: float = 0.0,
                           seed: int = 0, maxiter: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs (largest first) of a symmetric operator given by its matrix-vector product.

    Returns ``(values (k,), vectors (k, dim))`` in float64. Uses ARPACK's implicitly restarted
    Lanczos (``scipy.sparse.linalg.eigsh``); on non-convergence the converged pairs are kept
    with a warning.
    """
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    if not 1 <= k < dim:
        raise ValueError(f"Lanczos needs 1 <= k < dim, got k={k}, dim={dim}")
    operator = LinearOperator((dim, dim), matvec=lambda v: np.asarray(matvec(np.asarray(v, dtype=np.float64).ravel()), dtype=np.float64).ravel(), dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(dim)
    try:
        values, vectors = eigsh(operator, k=k, which="LA", tol=tol, v0=v0, maxiter=maxiter)
    except ArpackNoConvergence as exc:
        if len(exc.eigenvalues) == 0:
            raise UserError(f"Lanczos found none of the top {k} eigenpairs; use the exact Hessian (--exact) or fewer directions") from None
        warnings.warn(f"Lanczos: only {len(exc.eigenvalues)} of {k} eigenpairs converged", stacklevel=2)
        values, vectors = exc.eigenvalues, exc.eigenvectors
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order].T.copy()


def _torch_matvec(hvp_fns: list[Callable[[torch.Tensor], torch.Tensor]], device, dtype):
    """numpy float64 vector -> mean_i H_i v (numpy float64), for Lanczos."""

    def matvec(v: np.ndarray) -> np.ndarray:
        vector = torch.from_numpy(v).to(device=device, dtype=dtype)
        total = None
        for hvp in hvp_fns:
            product = hvp(vector).double()
            total = product if total is None else total + product
        return (total / len(hvp_fns)).cpu().numpy()

    return matvec


def _single_hvp(f, z):
    from torch.func import grad, jvp

    def hvp(v):
        with _quiet(), torch.no_grad():
            return jvp(grad(f), (z,), (v,))[1]

    return hvp


# ----------------------------------------------------------------------------------------------
# discovery


def _condition_item(condition, i: int):
    if condition is None:
        return None
    if isinstance(condition, torch.Tensor):
        return condition[i : i + 1]
    if isinstance(condition, (list, tuple)):
        return type(condition)(_condition_item(c, i) for c in condition)
    if isinstance(condition, dict):
        return {k: _condition_item(v, i) for k, v in condition.items()}
    return condition


def _typical_distance(generator, latents, conditions, distance_fn) -> float:
    """Mean distance between consecutive sampled images: the scale of a 'different image'."""
    n = latents.shape[0]
    if n < 2:
        return float("nan")
    with torch.no_grad():
        images = torch.cat([generate(generator, latents[i : i + 1], _condition_item(conditions, i)) for i in range(n)])
        values = [float(distance_fn(images[i : i + 1], images[i + 1 : i + 2])) for i in range(n - 1)]
    return float(np.mean(values))


def _shift_scales(eigenvalues: np.ndarray, target: float, cap: float) -> np.ndarray:
    """Shift t with 1/2 lambda t^2 = target (the image moves by ``target`` in D), capped."""
    values = np.maximum(np.asarray(eigenvalues, dtype=np.float64), 1e-30)
    return np.minimum(np.sqrt(2 * target / values), cap)


def discover_hessian(generator, *, samples: int = 8, distance="mse", top_k: int | None = None, exact: bool | None = None,
                     feature_net: nn.Module | None = None, batch_size: int = 16, seed: int = 0, device=None,
                     progress: bool = True, homogeneity: bool = True, lpips_net: str = "alex") -> Directions:
    """Global interpretable axes: eigenvectors of the metric tensor averaged over ``samples`` latents.

    ``exact`` (default: dim_z <= 256) builds full Hessians (from the Jacobian for squared
    distances, from batched HVPs otherwise); otherwise the top
    ``top_k`` eigenpairs (default 40) come from Lanczos on the averaged HVP operator. Returns
    Directions (method "hessian") with rows = eigenvectors, largest eigenvalue first;
    ``stats["eigenvalues"]`` and ``stats["shift_scales"]`` (per-direction shift that changes the
    image by a quarter of the typical distance between two samples) have length K;
    ``stats["spectrum"]`` holds what ``write_spectrum_report`` plots.
    """
    from tqdm.auto import tqdm

    from discovery.io import run_manifest

    started = time.perf_counter()
    if samples < 1:
        raise UserError(f"--samples {samples}: need at least one latent")
    device = device_for(device, generator)
    generator = generator.to(device)
    dim = int(generator.dim_z)
    exact = dim <= EXACT_MAX_DIM if exact is None else bool(exact)
    if top_k is not None and not 1 <= top_k <= dim:
        raise UserError(f"--top-k {top_k}: must be between 1 and the latent size {dim}")
    if not exact and (top_k or LANCZOS_DEFAULT_K) >= dim:
        exact = True  # Lanczos needs k < dim; the full Hessian is as cheap then
    k = top_k if top_k is not None else (dim if exact else LANCZOS_DEFAULT_K)
    distance_fn = make_distance(distance, feature_net, lpips_net=lpips_net)
    for module in _distance_modules(distance_fn):
        module.to(device)
    dtype = parameter_dtype(generator)

    rng = torch.Generator().manual_seed(seed)
    latents = generator.sample_latent(samples, rng).to(device=device, dtype=dtype)
    conditions = generator.sample_condition(samples, rng)
    functions = [latent_distance(generator, latents[i], _condition_item(conditions, i), distance_fn) for i in range(samples)]

    sample_values: list[np.ndarray] = []
    sample_vectors: list[np.ndarray] = []
    cross = None
    if exact:
        hessians = []
        for i in tqdm(range(samples), desc="hessian", disable=not progress):
            hessian = jacobian_hessian(generator, latents[i], _condition_item(conditions, i), distance_fn, batch_size=batch_size)
            if hessian is None:
                hessian = exact_hessian(functions[i], latents[i], batch_size=batch_size)
            hessians.append(hessian.double().cpu())
        mean_hessian = torch.stack(hessians).mean(0)
        values, vectors = torch.linalg.eigh(mean_hessian)
        values, vectors = values.flip(0).numpy(), vectors.flip(1).T.numpy()
        if homogeneity and samples > 1:
            # The numerically non-zero part of the spectrum: log(0 + rounding noise) would only add noise.
            kh = max(2, min(k, int((values > values[0] * 1e-8).sum())))
            for hessian in hessians:
                v, u = torch.linalg.eigh(hessian)
                sample_values.append(v.flip(0)[:kh].numpy())
                sample_vectors.append(u.flip(1).T[:kh].numpy())
            cross = np.zeros((samples, samples, kh))
            for i in range(samples):
                u = torch.from_numpy(sample_vectors[i])
                for j in range(samples):
                    cross[i, j] = torch.einsum("kd,de,ke->k", u, hessians[j], u).numpy()
        mode = "exact"
    else:
        hvps = [_single_hvp(functions[i], latents[i]) for i in range(samples)]
        tol = 0.0 if dtype == torch.float64 else 1e-6
        bar = tqdm(total=1 + (samples if homogeneity and samples > 1 else 0), desc="lanczos", disable=not progress)
        values, vectors = lanczos_top_eigenpairs(_torch_matvec(hvps, device, dtype), dim, k, tol=tol, seed=seed)
        bar.update()
        if homogeneity and samples > 1:
            kh = min(k, HOMOGENEITY_MAX_K)
            for i in range(samples):
                v, u = lanczos_top_eigenpairs(_torch_matvec([hvps[i]], device, dtype), dim, kh, tol=tol, seed=seed + i + 1)
                sample_values.append(v)
                sample_vectors.append(u)
                bar.update()
            kh = min(len(v) for v in sample_values)
            cross = np.zeros((samples, samples, kh))
            for i in range(samples):
                u = torch.from_numpy(sample_vectors[i][:kh]).to(device=device, dtype=dtype)
                for j in range(samples):
                    products = hessian_vector_products(functions[j], latents[j], u, batch_size=batch_size)
                    cross[i, j] = (products * u).sum(1).double().cpu().numpy()
            sample_values = [v[:kh] for v in sample_values]
            sample_vectors = [u[:kh] for u in sample_vectors]
        bar.close()
        mode = "lanczos"

    matrix = canonical_signs(torch.from_numpy(np.ascontiguousarray(vectors[:k])).double())
    eigenvalues = np.asarray(values[:k], dtype=np.float64)

    typical = _typical_distance(generator, latents, conditions, distance_fn)
    target = TARGET_FRACTION * typical if math.isfinite(typical) and typical > 0 else None
    cap = 3.0 * math.sqrt(dim)
    if target is None:  # one sample, or all samples alike: fall back on the top eigenvalue
        target = 0.5 * max(float(eigenvalues[0]), 1e-12)
    scales = _shift_scales(eigenvalues, target, cap)
    reference = float(np.exp(np.mean(np.log(np.maximum(eigenvalues[: min(5, len(eigenvalues))], 1e-30)))))
    shift_scale = float(np.clip(_shift_scales(np.array([reference]), target, cap)[0], 0.05, cap))

    spectrum = {
        "mode": mode,
        "distance": distance if isinstance(distance, str) else getattr(distance, "__name__", "custom"),
        "samples": samples,
        "dim_z": dim,
        "eigenvalues": np.asarray(values, dtype=np.float64).tolist(),
        "sample_eigenvalues": [v.tolist() for v in sample_values],
        "anisotropy": anisotropy_measures(np.asarray(values), complete=exact),
        "typical_distance": typical,
        "target_distance": target,
    }
    if cross is not None:
        spectrum["homogeneity"] = homogeneity_measures(sample_values, sample_vectors, cross, dim)
    elapsed = time.perf_counter() - started
    return Directions(
        matrix=matrix.float(),
        generator=getattr(generator, "name", "custom"),
        method="hessian",
        shift_scale=shift_scale,
        stats={"eigenvalues": eigenvalues.tolist(), "shift_scales": scales.tolist(), "spectrum": spectrum},
        manifest=run_manifest(method="hessian", samples=samples, distance=spectrum["distance"], top_k=k, mode=mode,
                              batch_size=batch_size, seed=seed, device=str(device), seconds=elapsed),
    )




from discovery.methods import SHIFT_SCALE_OPTION, MethodOption, override_shift_scale, register_method  # noqa: E402  (registration at the end of the module)


@register_method(
    "hessian",
    description="Wang & Ponce 2021: eigenvectors of the Hessian of an image distance, averaged over latents",
    options=(
        MethodOption("samples", "latents the Hessian is averaged over", int),
        MethodOption("distance", "image distance: mse, features (--feature-net) or lpips", str, ("mse", "features", "lpips")),
        MethodOption("feature_net", "features distance: a TorchScript module file mapping images in [-1, 1] to features", str),
        MethodOption("trust_feature_net", "also accept a pickled nn.Module as --feature-net (runs the file's code: your own files only)", bool),
        MethodOption("top_k", "keep the top-k directions (None: all; Lanczos: 40)", int),
        MethodOption("exact", "full Hessian (--exact) or Lanczos on Hessian-vector products (--no-exact); None: exact up to dim_z 256", bool),
        MethodOption("batch_size", "Hessian-vector products per batch", int),
        SHIFT_SCALE_OPTION,
    ),
)
def run_hessian(generator, out_dir=None, *, samples: int = 8, distance: str = "mse", feature_net=None,
                trust_feature_net: bool = False, top_k: int | None = None, exact: bool | None = None, batch_size: int = 16,
                shift_scale: float | None = None, seed: int = 0, device=None, progress: bool = True) -> tuple:
    """``discover_hessian`` plus the spectrum report in ``out_dir``."""
    if distance == "features" and feature_net is None:
        raise UserError("--distance features: needs --feature-net FILE (a TorchScript module mapping images to features)")
    if feature_net is not None and distance != "features":
        raise UserError(f"--feature-net: applies to --distance features only (not {distance})")
    if isinstance(feature_net, (str, Path)):
        feature_net = load_feature_net(feature_net, trust=trust_feature_net)
    directions = discover_hessian(generator, samples=samples, distance=distance, top_k=top_k, exact=exact, feature_net=feature_net,
                                  batch_size=batch_size, seed=seed, device=device, progress=progress)
    override_shift_scale(directions, shift_scale)
    summary = {}
    if out_dir is not None:
        summary["spectrum"] = write_spectrum_report(directions, out_dir)
    return directions, summary
