"""Deformators keep their constraints; shift sampling obeys its range; reconstructors have the right heads."""

import pytest
import torch

from discovery.deformators import DEFORMATOR_TYPES, build_deformator
from discovery.errors import UserError
from discovery.reconstructors import LeNetReconstructor, ResNetReconstructor, build_reconstructor
from discovery.voynov import sample_shifts


def _train_a_little(deformator, steps=25, lr=0.05):
    """Push the parameters far from their initial values with a loss that ignores the constraints."""
    optimizer = torch.optim.Adam(deformator.parameters(), lr=lr)
    target = torch.randn(deformator.count, deformator.dim_z, generator=torch.Generator().manual_seed(1))
    for step in range(steps):
        indices = torch.arange(deformator.count)
        shifts = torch.full((deformator.count,), 3.0)
        loss = (deformator(indices, shifts) - 5 * target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return deformator


@pytest.mark.parametrize("kind", DEFORMATOR_TYPES)
def test_every_deformator_builds_and_shifts(kind):
    deformator = build_deformator(kind, 6, 10, generator=torch.Generator().manual_seed(0))
    assert deformator.matrix().shape == (6, 10)
    indices, shifts = torch.tensor([0, 5, 2]), torch.tensor([1.5, -2.0, 0.5])
    out = deformator(indices, shifts)
    torch.testing.assert_close(out, shifts[:, None] * deformator.matrix()[indices])
    assert deformator.trainable == (kind in ("linear", "projective", "ortho"))


def test_projective_columns_stay_unit_norm_after_training():
    deformator = _train_a_little(build_deformator("projective", 8, 12, generator=torch.Generator().manual_seed(0)))
    norms = deformator.matrix().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(8), atol=1e-5, rtol=0)
    assert not torch.allclose(deformator.weight.norm(dim=1), torch.ones(8), atol=1e-2)  # the raw parameter did move


@pytest.mark.parametrize("count", [16, 10])
def test_ortho_stays_orthonormal_after_training(count):
    deformator = build_deformator("ortho", count, 16, generator=torch.Generator().manual_seed(0))
    before = deformator.matrix().detach().clone()
    _train_a_little(deformator)
    matrix = deformator.matrix().detach()
    assert (matrix - before).abs().max() > 1e-2  # training rotated it
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(count), atol=1e-5, rtol=0)


def test_linear_starts_near_identity_and_learns():
    deformator = build_deformator("linear", 4, 6, random_init=False)
    torch.testing.assert_close(deformator.matrix(), torch.eye(6)[:4])
    start = deformator.matrix().detach().clone()
    _train_a_little(deformator)
    assert (deformator.matrix() - start).abs().max() > 0.1


def test_random_is_orthonormal_fixed_and_seeded():
    a = build_deformator("random", 5, 9, generator=torch.Generator().manual_seed(3))
    b = build_deformator("random", 5, 9, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.matrix(), b.matrix())
    torch.testing.assert_close(a.matrix() @ a.matrix().T, torch.eye(5), atol=1e-6, rtol=0)
    assert list(a.parameters()) == []


def test_identity_is_the_coordinate_axes():
    torch.testing.assert_close(build_deformator("identity", 3, 7).matrix(), torch.eye(7)[:3])


@pytest.mark.parametrize("kind", ["ortho", "random", "identity"])
def test_more_directions_than_dim_z_is_a_user_error(kind):
    with pytest.raises(UserError, match="dim_z"):
        build_deformator(kind, 9, 8)


def test_unknown_deformator_is_a_user_error():
    with pytest.raises(UserError, match="unknown"):
        build_deformator("fc", 4, 4)


def test_shift_sampling_obeys_range_and_minimum():
    eps = sample_shifts(200_000, 6.0, 0.5, torch.Generator().manual_seed(0))
    assert eps.abs().max() <= 6.0
    assert eps.abs().min() >= 0.5
    # pushed, not resampled: +/-0.5 carry 0.5 / 6 of the mass together, the rest is uniform
    at_minimum = (eps.abs() == 0.5).float().mean().item()
    assert abs(at_minimum - 0.5 / 6) < 0.005
    assert abs((eps > 0).float().mean().item() - 0.5) < 0.01
    inner = eps[(eps.abs() > 0.5)]
    histogram = torch.histc(inner.abs(), bins=11, min=0.5, max=6.0)
    assert (histogram / histogram.mean() - 1).abs().max() < 0.05


def test_shift_sampling_is_seeded():
    a = sample_shifts(64, 6.0, 0.5, torch.Generator().manual_seed(7))
    b = sample_shifts(64, 6.0, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("resolution", [16, 32, 48])
def test_lenet_reconstructor_heads(resolution):
    model = LeNetReconstructor(7)
    x = torch.randn(4, 3, resolution, resolution)
    logits, shift = model(x, x)
    assert logits.shape == (4, 7) and shift.shape == (4,)


def test_resnet_reconstructor_heads_and_choice():
    model = build_reconstructor("auto", 5, 64)
    assert isinstance(model, ResNetReconstructor)
    assert model.backbone.conv1.in_channels == 6
    x = torch.randn(2, 3, 64, 64)
    logits, shift = model(x, x)
    assert logits.shape == (2, 5) and shift.shape == (2,)
    assert isinstance(build_reconstructor("auto", 5, 32), LeNetReconstructor)
