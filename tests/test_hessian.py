"""Hessian geometry: exact, batched and Lanczos Hessians against analytic ones; procedural factors."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from discovery.directions import Directions
from discovery.errors import UserError
from discovery.generators import wrap_generator
from discovery.hessian import (
    discover_hessian,
    load_feature_net,
    exact_hessian,
    hessian_backward_loop,
    hessian_vector_products,
    jacobian_hessian,
    lanczos_top_eigenpairs,
    latent_distance,
    make_distance,
    write_spectrum_report,
)

DIM, SIDE = 10, 4


class LinearImages(nn.Module):
    """z -> A z reshaped to (3, SIDE, SIDE): D = mean((A (z' - z))^2) is an exact quadratic form."""

    def __init__(self, A):
        super().__init__()
        self.register_buffer("A", A)

    def forward(self, z):
        return (z @ self.A.T).reshape(-1, 3, SIDE, SIDE)


def _quadratic_generator():
    A = torch.randn(3 * SIDE * SIDE, DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    A = A * torch.linspace(2.0, 0.2, DIM, dtype=torch.float64)  # a spread spectrum
    G = wrap_generator(LinearImages(A), dim_z=DIM, resolution=SIDE, name="quadratic", check_range=False)  # a quadratic form, not images
    return G, 2 * A.T @ A / A.shape[0]


def _relative(a, b):
    return float((torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)).norm() / torch.as_tensor(b, dtype=torch.float64).norm())


def test_exact_and_lanczos_match_analytic_quadratic_form():
    G, H_true = _quadratic_generator()
    values_true, vectors_true = torch.linalg.eigh(H_true)
    values_true, vectors_true = values_true.flip(0), vectors_true.flip(1).T
    z = torch.randn(DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f = latent_distance(G, z)

    assert _relative(exact_hessian(f, z, batch_size=3), H_true) < 1e-4  # batched forward-over-reverse
    assert _relative(hessian_backward_loop(f, z), H_true) < 1e-4  # the official code's loop
    V = torch.randn(4, DIM, dtype=torch.float64)
    assert _relative(hessian_vector_products(f, z, V, batch_size=2), V @ H_true) < 1e-4

    exact = discover_hessian(G, samples=2, progress=False)
    assert exact.method == "hessian" and exact.count == DIM
    assert np.allclose(exact.stats["eigenvalues"], values_true.numpy(), rtol=1e-4, atol=0)
    lanczos = discover_hessian(G, samples=2, exact=False, top_k=4, progress=False)
    assert lanczos.stats["spectrum"]["mode"] == "lanczos" and lanczos.count == 4
    assert np.allclose(lanczos.stats["eigenvalues"], values_true[:4].numpy(), rtol=1e-4, atol=0)
    # Eigenvectors (float32 in the file) agree up to sign.
    for result in (exact, lanczos):
        cos = (result.matrix.double() @ vectors_true[: result.count].T).diagonal().abs()
        assert torch.all(cos > 1 - 1e-5)
        assert torch.allclose(result.matrix.norm(dim=1), torch.ones(result.count), atol=1e-5)
    # A constant metric is perfectly homogeneous.
    homogeneity = lanczos.stats["spectrum"]["homogeneity"]
    assert homogeneity["homogeneity"] == pytest.approx(1.0, abs=1e-6)
    assert exact.stats["spectrum"]["homogeneity"]["top_subspace_overlap"]["mean_offdiagonal"] == pytest.approx(1.0, abs=1e-6)

    values, _ = lanczos_top_eigenpairs(lambda v: H_true.numpy() @ v, DIM, 3)
    assert np.allclose(values, values_true[:3].numpy(), rtol=1e-10)


def test_feature_distance_hessian_and_distance_errors(tmp_path):
    G, _ = _quadratic_generator()
    B = torch.randn(7, 3 * SIDE * SIDE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    features = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 7, bias=False)).double()
    with torch.no_grad():
        features[1].weight.copy_(B)

    A = G.module.A
    H_true = 2 * A.T @ B.T @ B @ A / 7
    z = torch.zeros(DIM, dtype=torch.float64)
    f = latent_distance(G, z, distance="feature", feature_net=features)
    assert _relative(exact_hessian(f, z), H_true) < 1e-4
    assert _relative(jacobian_hessian(G, z, None, make_distance("feature", features)), H_true) < 1e-10
    torch.jit.save(torch.jit.script(features), tmp_path / "features.pt")  # a TorchScript file, as the command line passes it
    f = latent_distance(G, z, distance=make_distance("feature", str(tmp_path / "features.pt")))
    torch.save(features, tmp_path / "pickled.pt")  # a pickled module runs code when loaded: refused unless trusted
    with pytest.raises(UserError, match="trust-feature-net"):
        make_distance("feature", str(tmp_path / "pickled.pt"))
    assert isinstance(load_feature_net(tmp_path / "pickled.pt", trust=True), nn.Module)
    assert _relative(exact_hessian(f, z), H_true) < 1e-4

    with pytest.raises(UserError, match="feature network"):
        make_distance("feature")
    with pytest.raises(UserError, match="not found"):
        make_distance("feature", tmp_path / "missing.pt")
    with pytest.raises(UserError, match="unknown distance"):
        make_distance("ssim")
    with pytest.raises(UserError, match="--distance feature"):
        make_distance("mse", feature_net=features)
    assert make_distance("features", feature_net=features) is not None  # the command line's spelling


def test_lpips_without_weights_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError, match="lpips"):
        make_distance("lpips")


def test_batched_hvps_match_backward_loop_on_a_network():
    from discovery.generators import create_generator

    G = create_generator("tiny-dcgan", dim_z=12, resolution=16)
    z = G.sample_latent(1, torch.Generator().manual_seed(0))[0]
    f = latent_distance(G, z)
    batched, loop = exact_hessian(f, z, batch_size=5), hessian_backward_loop(f, z)
    assert _relative(batched, loop) < 1e-4
    assert torch.allclose(batched, batched.T)
    # The squared distance's Hessian at z' = z is 2 J^T J / n: the Jacobian route gives the same matrix.
    assert _relative(jacobian_hessian(G, z, None, make_distance("mse"), batch_size=5), loop) < 1e-4
    # A distance that is not a plain squared distance has no Jacobian shortcut.
    assert jacobian_hessian(G, z, None, lambda a, b: (a - b).abs().pow(3).mean()) is None


def test_hessian_axes_align_with_procedural_factors(procedural_generator, tmp_path):
    G = procedural_generator
    directions = discover_hessian(G, samples=3, progress=False)
    assert directions.count == G.dim_z
    values = np.array(directions.stats["eigenvalues"])
    assert np.all(np.diff(values) <= 1e-9) and values[4] > 1e-4 and np.all(np.abs(values[5:]) < 1e-6)
    for key in ("eigenvalues", "shift_scales"):
        assert len(directions.stats[key]) == directions.count
    factors = torch.stack(list(G.factor_directions.values()))
    cos = (factors @ directions.matrix[:5].T).abs()
    assert torch.all(cos.max(1).values > 0.95), cos  # each factor is one of the top-5 axes
    assert sorted(cos.argmax(1).tolist()) == [0, 1, 2, 3, 4]
    assert 0.05 <= directions.shift_scale <= 3 * G.dim_z**0.5

    report = write_spectrum_report(directions, tmp_path / "spectrum")
    assert (tmp_path / "spectrum" / "spectrum.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "spectrum" / "spectrum.json").read_text())
    assert saved["homogeneity"]["homogeneity"] == pytest.approx(report["homogeneity"]["homogeneity"])
    assert -1 <= saved["homogeneity"]["homogeneity"] <= 1
    assert saved["anisotropy"]["dims_for_99_percent"] <= 5
    with pytest.raises(UserError, match="spectrum"):
        write_spectrum_report(Directions(torch.eye(3), "x", "voynov"), tmp_path / "other")


def test_lanczos_agrees_with_exact_on_procedural(procedural_generator):
    G = procedural_generator
    exact = discover_hessian(G, samples=2, progress=False, homogeneity=False)
    lanczos = discover_hessian(G, samples=2, exact=False, top_k=3, progress=False, homogeneity=False)
    assert np.allclose(lanczos.stats["eigenvalues"], exact.stats["eigenvalues"][:3], rtol=1e-3)
    assert torch.all((lanczos.matrix @ exact.matrix[:3].T).diagonal().abs() > 0.999)
