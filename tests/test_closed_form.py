"""GANSpace and SeFa directions, the latent-layer detection, and the method comparison report."""


import numpy as np
import pytest
import torch
from torch import nn

from discovery.closed_form import discover_ganspace, discover_sefa, find_latent_layer, principal_components

from discovery.errors import UserError
from discovery.generators import create_generator, wrap_generator


def _span_cosines(factors: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Norm of each factor's projection on the span of ``rows`` (1: inside it)."""
    q, _ = torch.linalg.qr(rows.double().T)
    return (factors.double() @ q).norm(dim=1)


def _spectrum_generator(dim=6, features=12):
    """z -> tanh(W z) as a 3 x 2 x 2 image, W with a designed, well separated spectrum."""
    rng = torch.Generator().manual_seed(5)
    u, _ = torch.linalg.qr(torch.randn(features, dim, generator=rng))
    v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=rng))
    W = u @ torch.diag(torch.tensor([3.0, 1.5, 0.8, 0.4, 0.2, 0.1])) @ v.T
    linear = nn.Linear(dim, features)
    with torch.no_grad():
        linear.weight.copy_(W)
        linear.bias.zero_()
    module = nn.Sequential(linear, nn.Tanh(), nn.Unflatten(1, (3, 2, 2)))
    return wrap_generator(module, dim_z=dim, resolution=2).eval().requires_grad_(False), v.T  # rows of v.T: true axes


def test_sefa_spans_the_procedural_factors(procedural_generator):
    G = procedural_generator
    directions = discover_sefa(G)
    assert directions.method == "sefa" and directions.count == G.dim_z
    assert np.allclose(directions.stats["eigenvalues"][:5], 1, atol=1e-5) and np.allclose(directions.stats["eigenvalues"][5:], 0, atol=1e-5)
    factors = torch.stack(list(G.factor_directions.values()))
    assert torch.all(_span_cosines(factors, directions.matrix[:5]) > 0.999)
    assert directions.shift_scale == pytest.approx(3.0, rel=0.15)
    assert len(directions.stats["explained_variance"]) == directions.count


def test_sefa_finds_the_first_layer_and_its_axes():
    T = create_generator("tiny-dcgan", dim_z=16, resolution=16)
    layer = find_latent_layer(T)
    assert layer.name == "net.0" and layer.weight.shape == (T.net[0].weight[0].numel(), 16)
    directions = discover_sefa(T, top_k=4)
    W = layer.weight.double()
    W = W / W.norm(dim=1, keepdim=True)
    values, _ = torch.linalg.eigh(W.T @ W)
    assert np.allclose(directions.stats["eigenvalues"], values.flip(0)[:4].numpy(), rtol=1e-6)
    assert torch.allclose(directions.matrix.norm(dim=1), torch.ones(4), atol=1e-5)

    G, axes = _spectrum_generator()
    unnormalised = discover_sefa(G, normalize=False)
    assert torch.all((unnormalised.matrix.double() @ axes.double().T).diagonal().abs() > 0.999)


def test_latent_layer_with_concatenated_condition_and_declared_weight():
    class ZAndEmbedding(nn.Module):  # like BigGAN-deep's gen_z: Linear over [z, class embedding]
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(3, 4)
            self.gen_z = nn.Linear(6 + 4, 12)

        def forward(self, z):
            y = self.embed(torch.zeros(z.shape[0], dtype=torch.long))
            return torch.tanh(self.gen_z(torch.cat([z, y], 1))).reshape(-1, 3, 2, 2)

    G = wrap_generator(ZAndEmbedding(), dim_z=6, resolution=2).eval()
    layer = find_latent_layer(G)
    assert layer.name == "module.gen_z" and torch.equal(layer.weight, G.module.gen_z.weight[:, :6])

    declared = torch.randn(5, 6)
    G.latent_weight = declared
    assert torch.equal(find_latent_layer(G).weight, declared)

    class NoWeights(nn.Module):
        def forward(self, z):
            return torch.sin(z[:, :3, None, None]).expand(-1, 3, 2, 2)

    with pytest.raises(UserError, match="latent_layer"):
        discover_sefa(wrap_generator(NoWeights(), dim_z=6, resolution=2))


def test_ganspace_on_procedural_images(procedural_generator):
    G = procedural_generator
    directions = discover_ganspace(G, samples=384, seed=0)
    assert directions.method == "ganspace" and directions.manifest["layer"] == "output"
    for key in ("explained_variance", "variance", "regression_r2", "shift_scales"):
        assert len(directions.stats[key]) == directions.count
    assert np.all(np.diff(directions.stats["explained_variance"]) <= 1e-12)
    f = G.factor_directions
    assert abs(float(directions.matrix[0] @ f["background_brightness"])) > 0.98  # the largest image variance
    cos = (torch.stack([f["object_hue"], f["object_size"]]) @ directions.matrix[:5].T).abs().max(1).values
    assert torch.all(cos > 0.9), cos
    factors = torch.stack(list(f.values()))
    assert torch.all(_span_cosines(factors, directions.matrix[:5]) > 0.9)  # x/y share a 2-d PCA eigenspace


def test_ganspace_layers():
    G, axes = _spectrum_generator()
    linear = discover_ganspace(G, samples=512, layer="module.0", top_k=3)
    assert torch.all((linear.matrix.double() @ axes[:3].double().T).diagonal().abs() > 0.99)  # = SeFa on a linear layer
    T = create_generator("tiny-dcgan", dim_z=8, resolution=16)
    default = discover_ganspace(T, samples=64, top_k=4)
    assert default.manifest["layer"] == "net.2"  # the first activation after the latent layer
    assert discover_ganspace(T, samples=64, layer="latent", top_k=2).count == 2

    class FunctionalActivations(nn.Module):  # activations as functions (like BigGAN): the next layer's output
        def __init__(self):
            super().__init__()
            self.first, self.second = nn.Linear(4, 8), nn.Linear(8, 12)

        def forward(self, z):
            return torch.tanh(self.second(torch.relu(self.first(z)))).reshape(-1, 3, 2, 2)

    F = wrap_generator(FunctionalActivations(), dim_z=4, resolution=2).eval()
    assert discover_ganspace(F, samples=32, top_k=2).manifest["layer"] == "module.second"
    with pytest.raises(UserError, match="no such module"):
        discover_ganspace(T, samples=16, layer="net.99")
    components, variances, total = principal_components(torch.randn(50, 300), 5)
    assert components.shape == (5, 300) and torch.allclose(components.norm(dim=1), torch.ones(5), atol=1e-4)
    assert float(variances.sum()) < total
