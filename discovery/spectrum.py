"""The Hessian spectrum report: anisotropy (eigenvalue decay) and homogeneity across latents.

Homogeneity follows Wang & Ponce (ICLR 2021): for two latents z_i, z_j with eigenpairs
(lambda_k, v_k) of H(z_i), the Pearson correlation between log lambda_k and log v_k^T H(z_j) v_k
over the top eigenvectors (1 when H(z_j) stretches the eigenvectors of H(z_i) exactly as H(z_i)
does), and the overlap of the top eigenspaces (||V_i^T V_j||_F^2 / m, 1 for identical spaces,
m / dim_z by chance).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from discovery.directions import Directions
from discovery.errors import UserError

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
