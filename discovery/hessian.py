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

Distances (``distance=``): ``"mse"`` (mean squared pixel difference of the images in
[-1, 1]), ``"feature"`` (mean squared difference of the outputs of a network the caller
passes as ``feature_net``, or a TorchScript / pickled module file; it receives images in [-1, 1]), ``"lpips"`` (the LPIPS package,
when installed and its backbone weights are on disk), or any callable ``D(reference, images)``
returning a scalar.

Spectrum report (``write_spectrum_report``): the eigenvalue decay plot (anisotropy) and the
homogeneity of the metric across latents. Homogeneity follows the paper: for two latents
z_i, z_j with eigenpairs (lambda_k, v_k) of H(z_i), the Pearson correlation between
log lambda_k and log v_k^T H(z_j) v_k over the top eigenvectors (1 when H(z_j) stretches the
eigenvectors of H(z_i) exactly as H(z_i) does). The report gives the matrix over the sampled
latents and its mean off-diagonal, plus the overlap of the top eigenspaces
(||V_i^T V_j||_F^2 / m, 1 for identical spaces, m / dim_z by chance).
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
from discovery.errors import UserError

EXACT_MAX_DIM = 256  # full Hessians up to this latent size; Lanczos above
LANCZOS_DEFAULT_K = 40  # eigenpairs Lanczos computes when top_k is not given
HOMOGENEITY_MAX_K = 20  # eigenpairs per latent for the homogeneity measure in Lanczos mode
TARGET_FRACTION = 0.25  # shift_scale: a shift changes the image by this fraction of the distance between two samples
DISTANCES = ("mse", "feature", "lpips")

# File names torchvision gives the LPIPS backbones in its hub cache.
_LPIPS_BACKBONES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


# ----------------------------------------------------------------------------------------------
# distances


def make_distance(distance="mse", feature_net: nn.Module | None = None, *, lpips_net: str = "alex") -> Callable:
    """``D(reference, images) -> scalar``: the image distance whose Hessian is the metric.

    ``reference`` and ``images`` are (N, C, H, W) in [-1, 1]; D is averaged over the batch.
    """
    if callable(distance) and not isinstance(distance, str):
        if feature_net is not None:
            raise UserError("feature_net is only used with distance='feature'")
        return distance
    if distance == "features":  # the command line's spelling
        distance = "feature"
    if distance not in DISTANCES:
        raise UserError(f"--distance {distance!r}: unknown distance (known: {', '.join(DISTANCES)})")
    if feature_net is not None and distance != "feature":
        raise UserError(f"a feature network was given with --distance {distance}; use --distance feature to use it")
    if distance == "mse":
        return _mse
    if distance == "feature":
        if isinstance(feature_net, (str, Path)):
            feature_net = load_feature_net(feature_net)
        if feature_net is None:
            raise UserError("--distance feature needs a feature network (feature_net: an nn.Module mapping images in [-1, 1] to features)")
        feature_net = feature_net.eval()
        return _FeatureDistance(feature_net)
    return _lpips_distance(lpips_net)


def load_feature_net(path, trust: bool = False) -> nn.Module:
    """A feature network from a file: TorchScript (``torch.jit.save``), which runs no Python code
    when loaded; a pickled ``nn.Module`` only with ``trust=True``, since unpickling runs the file's code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--feature-net {path}: file not found (expected a TorchScript module, torch.jit.save)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        if not trust:
            raise UserError(f"--feature-net {path}: not a TorchScript module ({type(exc).__name__}); save it with "
                            "torch.jit.save, or pass --trust-feature-net to unpickle a module you made yourself") from None
        try:
            net = torch.load(path, map_location="cpu", weights_only=False)  # the user asked for it: their own file
        except Exception as exc2:
            raise UserError(f"--feature-net {path}: not a readable TorchScript or pickled module ({type(exc2).__name__})") from None
    if not isinstance(net, nn.Module):
        raise UserError(f"--feature-net {path}: holds a {type(net).__name__}, not an nn.Module")
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net.eval()


def _mse(reference: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return (images - reference).pow(2).mean()


class _FeatureDistance:
    """Mean squared difference of ``net(images)`` (a tensor or a tuple/list/dict of tensors)."""

    def __init__(self, net: nn.Module):
        self.net = net

    def __call__(self, reference, images):
        return _feature_mse(self.net(reference), self.net(images))


def _feature_mse(a, b) -> torch.Tensor:
    return sum((x - y).pow(2).mean() for x, y in zip(_groups(a), _groups(b), strict=True))


def lpips_weights_path(net: str = "alex") -> Path:
    """Where torchvision (and so LPIPS) looks for the backbone weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _LPIPS_BACKBONES[net]


def _lpips_distance(net: str):
    if net not in _LPIPS_BACKBONES:
        raise UserError(f"LPIPS backbone {net!r}: unknown (known: {', '.join(_LPIPS_BACKBONES)})")
    try:
        import lpips
    except ImportError:
        raise UserError("--distance lpips needs the lpips package: pip install 'saliency[lpips]' (or use --distance mse / feature)") from None
    path = lpips_weights_path(net)
    if not path.is_file():
        raise UserError(
            f"--distance lpips: the {net} backbone weights are not on this machine; put {_LPIPS_BACKBONES[net]} "
            f"(torchvision's ImageNet weights) at {path} (or set TORCH_HOME), or use --distance mse / feature"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, verbose=False).eval().requires_grad_(False)
    for module in model.modules():  # in-place ReLUs do not mix with torch.func transforms
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return _LpipsDistance(model)


class _LpipsDistance:
    def __init__(self, model):
        self.net = model  # named like _FeatureDistance so .to(device) finds it

    def __call__(self, reference, images):
        return self.net(reference, images, normalize=False).mean()


def _distance_modules(distance_fn) -> list[nn.Module]:
    net = getattr(distance_fn, "net", None)
    return [net] if isinstance(net, nn.Module) else []


# ----------------------------------------------------------------------------------------------
# Hessian-vector products, full Hessians, Lanczos


def _generate(generator, z: torch.Tensor, condition):
    return generator(z, condition) if condition is not None else generator(z)


def latent_distance(generator, z: torch.Tensor, condition=None, distance="mse", feature_net=None) -> Callable:
    """``f(z') = D(G(z), G(z'))`` for one latent ``z`` (shape (dim_z,)); H(z) is its Hessian at z.

    ``condition`` is the condition of this one latent (batch of 1) for conditional generators;
    ``distance`` is a name or a callable from ``make_distance``.
    """
    distance_fn = distance if callable(distance) and not isinstance(distance, str) else make_distance(distance, feature_net)
    with torch.no_grad():
        reference = _generate(generator, z[None], condition).detach()

    def f(z_prime: torch.Tensor) -> torch.Tensor:
        return distance_fn(reference, _generate(generator, z_prime[None], condition))

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


def _groups(features) -> tuple:
    """A feature network's output (a tensor or a tuple/list/dict of tensors) as a flat tuple of tensors."""
    if isinstance(features, torch.Tensor):
        return (features,)
    if isinstance(features, dict):
        return tuple(t for key in features for t in _groups(features[key]))
    if isinstance(features, (list, tuple)):
        return tuple(t for item in features for t in _groups(item))
    raise UserError(f"the feature network returned {type(features).__name__}; expected a tensor or a tuple/list/dict of tensors")


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
        return tuple(t.flatten() for t in _groups(embed(_generate(generator, x[None], condition))))

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
# spectrum measures


def _positive_log(values: np.ndarray, floor: float) -> np.ndarray:
    return np.log(np.maximum(values, floor))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def homogeneity_measures(eigenvalues: list[np.ndarray], eigenvectors: list[np.ndarray], cross_rayleigh: np.ndarray,
                         dim_z: int, subspace_dim: int | None = None) -> dict:
    """Homogeneity of the metric across latents.

    ``eigenvalues[i]`` (k,) and ``eigenvectors[i]`` (k, d): top eigenpairs of H(z_i), largest
    first; ``cross_rayleigh[i, j]`` (k,): v^T H(z_j) v for the eigenvectors v of H(z_i).
    """
    n = len(eigenvalues)
    corr = np.eye(n)
    overlap = np.eye(n)
    if subspace_dim is None:  # a proper subspace: the top quarter of the latent space, at most 10 dims
        subspace_dim = min(10, max(1, dim_z // 4))
    m = min(subspace_dim, min(len(v) for v in eigenvalues))
    top = max(float(max(v.max() for v in eigenvalues)), 1e-300)
    floor = top * 1e-12
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            corr[i, j] = _pearson(_positive_log(eigenvalues[i], floor), _positive_log(cross_rayleigh[i, j], floor))
            vi, vj = eigenvectors[i][:m], eigenvectors[j][:m]
            overlap[i, j] = float(np.square(vi @ vj.T).sum() / m) if m else float("nan")
    off = ~np.eye(n, dtype=bool)
    mean = lambda matrix: float(np.nanmean(matrix[off])) if n > 1 else float("nan")  # noqa: E731
    return {
        "measure": "Pearson correlation of log eigenvalues of H(z_i) with log v^T H(z_j) v over the top eigenvectors v of H(z_i) (Wang & Ponce 2021)",
        "log_rayleigh_correlation": {"matrix": corr.tolist(), "mean_offdiagonal": mean(corr)},
        "top_subspace_overlap": {"dimension": m, "matrix": overlap.tolist(), "mean_offdiagonal": mean(overlap),
                                 "chance": m / dim_z if dim_z else float("nan")},
        "homogeneity": mean(corr),
    }


def anisotropy_measures(eigenvalues: np.ndarray, complete: bool) -> dict:
    """How unequal the spectrum is: a few directions carry most of the metric's trace."""
    values = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0, None)
    total = values.sum()
    out = {"complete_spectrum": bool(complete), "top_eigenvalue": float(values[0]) if len(values) else float("nan")}
    if total <= 0:
        return out
    cumulative = np.cumsum(values) / total
    out.update(
        {
            "participation_ratio": float(total**2 / np.square(values).sum()),
            "dims_for_90_percent": int(np.searchsorted(cumulative, 0.9) + 1),
            "dims_for_99_percent": int(np.searchsorted(cumulative, 0.99) + 1),
            "top_to_median_ratio": float(values[0] / max(np.median(values), values[0] * 1e-12)),
        }
    )
    return out


# ----------------------------------------------------------------------------------------------
# discovery


def _generator_dtype(generator) -> torch.dtype:
    for tensor in list(generator.parameters()) + list(generator.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


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


def _resolve(device, generator):
    if device is None:
        return generator.device
    from discovery.runtime import resolve_device

    return resolve_device(device) if isinstance(device, str) else torch.device(device)


def _typical_distance(generator, latents, conditions, distance_fn) -> float:
    """Mean distance between consecutive sampled images: the scale of a 'different image'."""
    n = latents.shape[0]
    if n < 2:
        return float("nan")
    with torch.no_grad():
        images = torch.cat([_generate(generator, latents[i : i + 1], _condition_item(conditions, i)) for i in range(n)])
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
    device = _resolve(device, generator)
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
    dtype = _generator_dtype(generator)

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


# ----------------------------------------------------------------------------------------------
# report


def write_spectrum_report(directions: Directions, out_dir) -> dict:
    """``spectrum.json`` and ``spectrum.png`` (eigenvalue decay, per-latent spectra, homogeneity)
    in ``out_dir``; returns the JSON content."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from discovery.io import write_json

    spectrum = directions.stats.get("spectrum")
    if not spectrum:
        raise UserError("these directions carry no Hessian spectrum (made by another method than 'hessian')")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    values = np.asarray(spectrum["eigenvalues"], dtype=np.float64)
    homogeneity = spectrum.get("homogeneity")
    report = {
        "generator": directions.generator,
        "mode": spectrum["mode"],
        "distance": spectrum["distance"],
        "samples": spectrum["samples"],
        "dim_z": spectrum["dim_z"],
        "eigenvalues": values.tolist(),
        "anisotropy": spectrum.get("anisotropy", {}),
        "homogeneity": homogeneity,
        "shift_scale": directions.shift_scale,
        "files": {"json": "spectrum.json", "plot": "spectrum.png"},
    }

    panels = 2 if homogeneity else 1
    figure, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.0), squeeze=False)
    axis = axes[0, 0]
    floor = max(values.max(), 1e-300) * 1e-12 if len(values) else 1e-12
    for sample in spectrum.get("sample_eigenvalues", []):
        s = np.maximum(np.asarray(sample), floor)
        axis.semilogy(np.arange(1, len(s) + 1), s, color="0.75", linewidth=0.8)
    axis.semilogy(np.arange(1, len(values) + 1), np.maximum(values, floor), color="C0", linewidth=2, label="mean H")
    axis.set_xlabel("eigenvalue rank")
    axis.set_ylabel("eigenvalue")
    aniso = spectrum.get("anisotropy", {})
    title = "Hessian spectrum"
    if "dims_for_99_percent" in aniso:
        title += f" (99% of trace in {aniso['dims_for_99_percent']}/{spectrum['dim_z']} dims)"
    axis.set_title(title, fontsize=9)
    axis.legend(["per latent", "mean H"] if spectrum.get("sample_eigenvalues") else ["mean H"], fontsize=8)
    if homogeneity:
        matrix = np.asarray(homogeneity["log_rayleigh_correlation"]["matrix"])
        image = axes[0, 1].imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
        axes[0, 1].set_title(f"homogeneity: mean off-diag corr {homogeneity['homogeneity']:.3f}", fontsize=9)
        axes[0, 1].set_xlabel("latent j")
        axes[0, 1].set_ylabel("latent i")
        figure.colorbar(image, ax=axes[0, 1], fraction=0.046)
    figure.tight_layout()
    from io import BytesIO

    from discovery.io import atomic_write_bytes

    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write_bytes(buffer.getvalue(), out_dir / "spectrum.png")
    write_json(report, out_dir / "spectrum.json")
    return report


from discovery.methods import MethodOption, register_method  # noqa: E402  (registration at the end of the module)


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
        MethodOption("shift_scale", "chart and mask-rule shift scale (None: the method's own)", float),
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
    if shift_scale is not None:
        directions.shift_scale = float(shift_scale)
    summary = {}
    if out_dir is not None:
        summary["spectrum"] = write_spectrum_report(directions, out_dir)
    return directions, summary
