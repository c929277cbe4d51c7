"""BigGAN-deep, BigGAN and BigBiGAN: architectures, real checkpoint formats, errors, class policy.

No real weights are obtainable here: each architecture is built with seeded random weights,
saved exactly as the published files are laid out (same keys, shapes and buffers; legacy
``torch.save`` format for the 2019 files), and loaded back through ``create_generator``.
Equality of outputs with the original code bases was checked once against
pytorch-pretrained-BigGAN 0.1.1 and a transcription of BigGAN-PyTorch (max |diff| < 1e-6).
"""

from __future__ import annotations

import json
import math
import urllib.error

import pytest
import torch

from discovery.errors import UserError
from discovery.generators import create_generator, get_entry
from discovery.generators.biggan import (
    BIGBIGAN_128,
    BIGGAN_128,
    PUBLISHED_KEYS_128,
    PUBLISHED_PARAMETERS_128,
    BigGANGenerator,
    BigGANNetwork,
)
from discovery.generators.biggan_deep import (
    PUBLISHED_COUNTS,
    BigGANDeepConfig,
    BigGANDeepGenerator,
    BigGANDeepNetwork,
    TruncatedStatsBatchNorm,
)
from discovery.generators.layers import derive_spectral_v, spectral_norm_layers, truncated_normal
from discovery.imagenet import ClassPolicy, class_name, parse_classes
from discovery.weights import resolve_weights


def _counts(module: torch.nn.Module) -> tuple[int, int]:
    return len(module.state_dict()), sum(p.numel() for p in module.parameters())


def _placeholder_state(module: torch.nn.Module) -> dict:
    """A state dict with the module's keys and shapes but no real storage (zeros expanded from one
    element): enough for the key/shape checks, and a few bytes on disk instead of 200 MB."""
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in module.state_dict().items()}


# -- architecture sizes -------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [128, 256, 512])
def test_biggan_deep_key_and_parameter_counts_equal_the_published_ones(resolution):
    model = BigGANDeepNetwork(BigGANDeepConfig.for_resolution(resolution))
    assert _counts(model) == PUBLISHED_COUNTS[resolution]
    state = model.state_dict()
    assert state["generator.layers.0.bn_0.running_means"].shape == (51, 2048)
    assert isinstance(model.generator.layers[8], torch.nn.Module) and hasattr(model.generator.layers[8], "snconv1x1_theta")
    assert {"embeddings.weight", "generator.gen_z.weight_orig", "generator.gen_z.weight_u", "generator.gen_z.weight_v"} <= set(state)


@pytest.mark.parametrize("config", [BIGGAN_128, BIGBIGAN_128], ids=["biggan", "bigbigan"])
def test_biggan_pytorch_key_and_parameter_counts(config):
    model = BigGANNetwork(config)
    keys, parameters = _counts(model)
    assert (keys, parameters) == (PUBLISHED_KEYS_128, PUBLISHED_PARAMETERS_128)
    assert round(parameters / 1e6, 2) == 70.43
    state = model.state_dict()
    assert state["shared.weight"].shape == (1000, 128) and state["linear.weight"].shape == (24576, 20)
    assert state["blocks.0.0.bn1.gain.weight"].shape == (1536, 148) and state["linear.u0"].shape == (1, 24576)
    assert state["blocks.3.1.gamma"].shape == () and "output_layer.2.sv0" in state and "output_layer.0.stored_var" in state
    assert model.dim_z == 120 and model.z_chunk == 20


# -- real-format checkpoints --------------------------------------------------------------------


@pytest.fixture(scope="module")
def deep128(tmp_path_factory):
    """A pytorch-pretrained-BigGAN folder (config.json + pytorch_model.bin) of random weights."""
    folder = tmp_path_factory.mktemp("biggan-deep-128")
    config = BigGANDeepConfig.for_resolution(128)
    model = BigGANDeepNetwork(config).initialize_random(seed=1)
    state = model.state_dict()
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    (folder / "config.json").write_text(json.dumps({**config.__dict__}, indent=2))
    return folder, state


@pytest.fixture(scope="module")
def biggan128(tmp_path_factory):
    folder = tmp_path_factory.mktemp("biggan-128")
    state = BigGANNetwork(BIGGAN_128).initialize_random(seed=2).state_dict()
    torch.save(state, folder / "G_ema.pth", _use_new_zipfile_serialization=False)
    return folder / "G_ema.pth", state


def _forward_twice(generator, n=1, seed=0):
    z = generator.sample_latent(n, torch.Generator().manual_seed(seed))
    condition = generator.sample_condition(n, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        first, second = generator(z, condition), generator(z, condition)
    assert first.shape == (n, 3, generator.resolution, generator.resolution) and first.dtype == torch.float32
    assert torch.equal(first, second), "forward is not deterministic"
    assert torch.isfinite(first).all() and first.abs().max() <= 1 and first.std() > 1e-3
    return first


def _same_state(generator_model, state):
    loaded = generator_model.state_dict()
    assert list(loaded) == list(state)
    return all(torch.equal(loaded[k], state[k]) for k in state)


def test_biggan_deep_loads_the_published_folder_layout(deep128):
    folder, state = deep128
    generator = create_generator("biggan-deep-128", weights=folder, classes="golden retriever, 1", truncation=0.4)
    assert isinstance(generator, BigGANDeepGenerator) and not generator.training
    assert _same_state(generator.model, state)
    assert generator.describe()["truncation"] == 0.4 and generator.describe()["classes"] == [207, 1]
    assert all(not p.requires_grad for p in generator.parameters())
    z = generator.sample_latent(512, torch.Generator().manual_seed(0))
    assert z.abs().max() <= 2 * 0.4 + 1e-6
    assert set(generator.sample_condition(64, torch.Generator().manual_seed(0)).tolist()) == {207, 1}
    _forward_twice(generator)
    assert generator.latent_weight().shape == (4 * 4 * 16 * 128, 128)  # gen_z's z columns (SeFa)
    # Class indices and the equivalent one-hot vectors select the same class embedding.
    one_hot = torch.nn.functional.one_hot(torch.tensor([207, 1]), 1000).float()
    assert torch.allclose(generator.model.embed(torch.tensor([207, 1])), generator.model.embed(one_hot), atol=1e-6)


def test_biggan_deep_file_path_without_weight_v_and_without_config(deep128, tmp_path):
    folder, state = deep128
    # Some published conversions drop the spectral-norm v vectors; a bare .bin has no config.
    without_v = {k: v for k, v in state.items() if not k.endswith(".weight_v")}
    assert len(state) - len(without_v) == 126
    torch.save(without_v, tmp_path / "pytorch_model.bin")
    generator = create_generator("biggan-deep-128", weights=tmp_path / "pytorch_model.bin")
    reference = BigGANDeepNetwork(BigGANDeepConfig.for_resolution(128))
    reference.load_state_dict(state)
    for ours, theirs in zip(spectral_norm_layers(generator.model), spectral_norm_layers(reference)):
        # v is re-derived from u (v = W^T u / |W^T u|, so sigma = |W^T u|); with converged singular
        # vectors, as in trained files, that is the stored pair's sigma (random ones are 3 steps in).
        w = theirs.weight_orig.detach().reshape(theirs.weight_orig.shape[0], -1)
        assert math.isclose(float(ours.sigma()), float((w.t() @ theirs.weight_u).norm()), rel_tol=1e-5)
        assert math.isclose(float(ours.sigma()), float(theirs.sigma()), rel_tol=0.1)
        assert torch.isfinite(ours.weight_sn).all()


def test_missing_weight_v_is_derived_as_torchs_spectral_norm_loader_does():
    """Against torch.nn.utils.spectral_norm itself: a state dict of the layout torch wrote before it
    kept v (weight_orig, weight_u and the normalised weight) is completed by torch's load hook;
    the package derives the same v, so eval-mode weights and outputs agree."""
    torch.manual_seed(0)
    for layer in (torch.nn.Linear(24, 40), torch.nn.Conv2d(6, 5, 3), torch.nn.Conv2d(16, 8, 1)):
        trained = torch.nn.utils.spectral_norm(layer)
        for _ in range(5):  # a few training steps' power iterations, as a trained file has
            trained(torch.randn(2, 24) if isinstance(layer, torch.nn.Linear) else torch.randn(2, layer.in_channels, 6, 6))
        trained.eval()
        old = {"weight_orig": trained.weight_orig.detach().clone(), "weight_u": trained.weight_u.clone(),
               "weight": trained.weight.detach().clone(), "bias": trained.bias.detach().clone()}
        reference = torch.nn.utils.spectral_norm(type(layer)(*([24, 40] if isinstance(layer, torch.nn.Linear) else [layer.in_channels, layer.out_channels, layer.kernel_size])))
        reference.load_state_dict(dict(old))  # no version metadata: torch's hook solves for v
        v = derive_spectral_v(old["weight_orig"], old["weight_u"], old["weight"])
        if isinstance(layer, torch.nn.Linear):  # W tall: v is unique (for wide W torch's pinv of W^T W picks another, same sigma)
            torch.testing.assert_close(v, reference.weight_v, atol=1e-5, rtol=1e-4)
        reference.eval()
        reference(torch.randn(2, 24) if isinstance(layer, torch.nn.Linear) else torch.randn(2, layer.in_channels, 6, 6))  # sets .weight
        sigma = torch.dot(old["weight_u"], old["weight_orig"].reshape(old["weight_orig"].shape[0], -1) @ v)
        torch.testing.assert_close(old["weight_orig"] / sigma, reference.weight.detach(), atol=1e-6, rtol=1e-5)


def test_biggan_deep_file_of_the_old_spectral_norm_layout_gives_the_reference_images(deep128, tmp_path):
    folder, state = deep128
    reference = BigGANDeepNetwork(BigGANDeepConfig.for_resolution(128))
    reference.load_state_dict(state)
    old = {k: v for k, v in state.items() if not k.endswith(".weight_v")}
    for name, layer in reference.named_modules():
        if hasattr(layer, "weight_v"):  # torch before v: the normalised weight stored instead
            old[f"{name}.weight"] = (layer.weight_orig / layer.sigma()).detach()
    torch.save(old, tmp_path / "pytorch_model.bin")
    generator = create_generator("biggan-deep-128", weights=tmp_path / "pytorch_model.bin", truncation=0.5)
    z = generator.sample_latent(2, torch.Generator().manual_seed(0))
    classes = torch.tensor([1, 207])
    with torch.no_grad():
        torch.testing.assert_close(generator.model(z, classes, 0.5), reference(z, classes, 0.5), atol=1e-4, rtol=1e-4)


def test_biggan_128_loads_g_ema_from_file_or_folder(biggan128):
    path, state = biggan128
    generator = create_generator("biggan-128", weights=path, classes="all")
    assert isinstance(generator, BigGANGenerator) and generator.dim_z == 120 and generator.conditional
    assert _same_state(generator.model, state)
    _forward_twice(generator)
    # SeFa's latent-to-feature weight: linear for chunk 0, the batch-norm maps of block i for chunk i+1.
    weight = generator.latent_weight()
    assert weight.shape == (24576 + sum(2 * (i + o) for i, o in zip(BIGGAN_128.in_channels, BIGGAN_128.out_channels)), 120)
    assert torch.equal(weight[:24576, :20], generator.model.linear.weight_sn) and not weight[:24576, 20:].any()
    assert _same_state(create_generator("biggan-128", weights=path.parent).model, state)
    counts = torch.bincount(generator.sample_condition(4000, torch.Generator().manual_seed(0)), minlength=1000)
    assert (counts > 0).sum() > 950, "'all' must draw uniformly over the 1000 classes"


def test_bigbigan_is_unconditional_and_accepts_files_without_sv0(tmp_path):
    state = BigGANNetwork(BIGBIGAN_128).initialize_random(seed=3).state_dict()
    converted = {k: v for k, v in state.items() if not k.endswith(".sv0")}  # the TF conversion has no sv0
    converted["blocks.3.1.gamma"] = converted["blocks.3.1.gamma"].reshape(1)  # TF's gamma has shape (1,)
    torch.save(converted, tmp_path / "BigBiGAN_x1.pth")
    generator = create_generator("bigbigan-128", weights=tmp_path)
    assert not generator.conditional and generator.sample_condition(4) is None
    assert generator.model.blocks[0][0].bn1.eps == 1e-4 and generator.model.linear.eps == 1e-4
    assert generator.model.blocks[3][1].gamma.shape == () and generator.model.blocks[3][1].gamma == state["blocks.3.1.gamma"]
    _forward_twice(generator)
    class0 = generator.model.shared.weight[0].expand(2, -1)
    assert torch.equal(generator.class_embedding(None, 2, "cpu"), class0)  # class 0, whatever the caller passes
    assert torch.equal(generator.class_embedding(torch.tensor([5, 9]), 2, "cpu"), class0)
    with pytest.raises(UserError, match="unconditional"):
        create_generator("bigbigan-128", weights=tmp_path, classes="207")
    with pytest.raises(UserError, match="biggan-deep"):
        create_generator("bigbigan-128", weights=tmp_path, truncation=0.5)


def test_channels_last_gives_the_same_images(biggan128):
    path, _ = biggan128
    generator = create_generator("biggan-128", weights=path, classes="3")
    z = generator.sample_latent(1, torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = generator(z)
        generator.to(memory_format=torch.channels_last)
        assert generator.model.blocks[0][0].conv1.weight_sn.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(generator(z), reference, atol=1e-5)


# -- bad files ----------------------------------------------------------------------------------


def _one_line_error(name, weights, match):
    with pytest.raises(UserError, match=match) as info:
        create_generator(name, weights=weights)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_corrupt_and_truncated_files_give_one_line_errors(deep128, tmp_path):
    folder, _ = deep128
    corrupt = tmp_path / "corrupt" / "pytorch_model.bin"
    corrupt.parent.mkdir()
    corrupt.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    message = _one_line_error("biggan-deep-128", corrupt.parent, "truncated or corrupt")
    assert str(corrupt) in message
    real = (folder / "pytorch_model.bin").read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(real[: len(real) // 2])
    _one_line_error("biggan-deep-128", truncated, "truncated or corrupt")
    (tmp_path / "G_ema.pth").write_bytes(b"not a checkpoint")
    _one_line_error("biggan-128", tmp_path / "G_ema.pth", "truncated or corrupt")
    (tmp_path / "bad-config").mkdir()
    (tmp_path / "bad-config" / "config.json").write_text("{not json")
    (tmp_path / "bad-config" / "pytorch_model.bin").write_bytes(b"")
    _one_line_error("biggan-deep-128", tmp_path / "bad-config", "config.json")
    _one_line_error("biggan-deep-128", tmp_path / "missing", "no such file")
    (tmp_path / "empty").mkdir()
    _one_line_error("biggan-deep-128", tmp_path / "empty", "no pytorch_model.bin")


def test_wrong_architecture_is_reported_with_keys_and_shapes(tmp_path):
    config256 = BigGANDeepConfig.for_resolution(256)
    state256 = _placeholder_state(BigGANDeepNetwork(config256))
    # A 256 folder passed to biggan-deep-128: its config.json says so.
    (tmp_path / "deep256").mkdir()
    torch.save(state256, tmp_path / "deep256" / "pytorch_model.bin")
    (tmp_path / "deep256" / "config.json").write_text(json.dumps(config256.__dict__))
    _one_line_error("biggan-deep-128", tmp_path / "deep256", "256-px BigGAN-deep.*biggan-deep-256")
    # The bare 256 weights file (no config.json beside it): strict loading lists what does not fit.
    (tmp_path / "bare").mkdir()
    torch.save(state256, tmp_path / "bare" / "weights.bin")
    message = _one_line_error("biggan-deep-128", tmp_path / "bare" / "weights.bin", "does not match")
    assert "unexpected (generator.layers.11" in message and "mis-shaped" in message and "BigGAN-deep 128" in message
    # A BigGAN-128 state dict with one renamed key.
    state = _placeholder_state(BigGANNetwork(BIGGAN_128))
    state["linear.weight_renamed"] = state.pop("linear.weight")
    torch.save(state, tmp_path / "renamed.pth")
    message = _one_line_error("biggan-128", tmp_path / "renamed.pth", "does not match")
    assert "1 missing (linear.weight)" in message and "1 unexpected (linear.weight_renamed)" in message
    # BigGAN-deep weights given to the BigGAN-PyTorch architecture.
    _one_line_error("bigbigan-128", tmp_path / "bare" / "weights.bin", "does not match")


def test_non_finite_weights_are_refused(tmp_path):
    state = _placeholder_state(BigGANNetwork(BIGGAN_128))
    state["shared.weight"] = torch.full((1000, 128), float("nan"))
    torch.save(state, tmp_path / "G_ema.pth")
    _one_line_error("biggan-128", tmp_path / "G_ema.pth", "shared.weight holds NaN")


def test_cli_reports_a_bad_checkpoint_in_one_line_with_exit_code_2(tmp_path, capsys):
    from saliency.cli import main

    (tmp_path / "G_ema.pth").write_bytes(b"\x00garbage")
    code = main(["discover", "--generator", "biggan-128", "--weights", str(tmp_path / "G_ema.pth"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "G_ema.pth" in err and "corrupt" in err


# -- weights that are not there -----------------------------------------------------------------


def test_offline_download_names_the_files_and_where_to_put_them(monkeypatch, tmp_path):
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as info:
        resolve_weights(get_entry("biggan-deep-256"), None)
    message = str(info.value)
    folder = cache / "biggan-deep-256" / "pytorch_pretrained_biggan"
    assert str(folder / "config.json") in message and str(folder / "pytorch_model.bin") in message and "--weights" in message
    assert calls == ["https://s3.amazonaws.com/models.huggingface.co/biggan/biggan-deep-256-config.json"]
    assert "biggan-deep-256-config.json" in message and "\n" not in message
    with pytest.raises(UserError) as info:
        resolve_weights(get_entry("bigbigan-128"), None)
    assert str(cache / "bigbigan-128" / "BigBiGAN_x1.pth") in str(info.value)
    with pytest.raises(UserError) as info:  # no public single-file URL: the note says where to get it
        create_generator("biggan-128")
    assert str(cache / "biggan-128" / "G_ema.pth") in str(info.value) and "BigGAN-PyTorch" in str(info.value)
    assert not list(cache.rglob("*.part"))


def test_registry_entries():
    for resolution in (128, 256, 512):
        source = get_entry(f"biggan-deep-{resolution}").weights
        assert source.files == ("config.json", "pytorch_model.bin") and f"biggan-deep-{resolution}-" in source.url
    assert get_entry("biggan-128").weights.filename == "G_ema.pth"
    assert get_entry("bigbigan-128").weights.url.startswith("https://")


# -- latents, truncation statistics, classes -----------------------------------------------------


def test_truncated_normal_matches_scipy_truncnorm():
    from scipy.stats import truncnorm

    z = truncated_normal(200_000, 1, truncation=0.5, generator=torch.Generator().manual_seed(0)).double()
    assert z.abs().max() <= 1.0
    assert abs(z.mean()) < 0.005 and abs(z.std() - 0.5 * truncnorm(-2, 2).std()) < 0.003
    again = truncated_normal(3, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again, truncated_normal(3, 4, generator=torch.Generator().manual_seed(7)))


def test_batch_norm_statistics_follow_the_truncation():
    bn = TruncatedStatsBatchNorm(2, n_stats=51, conditional=False)
    bn.running_means.copy_(torch.arange(51.0)[:, None].expand(51, 2))
    assert torch.equal(bn.statistics(1.0)[0], torch.tensor([50.0, 50.0]))
    assert torch.allclose(bn.statistics(0.03)[0], torch.tensor([1.5, 1.5]))  # halfway between 1 and 2
    x = torch.randn(2, 2, 3, 3)
    bn.running_means.zero_()
    assert torch.allclose(bn(x, 0.5), x / math.sqrt(1 + 1e-4), atol=1e-6)


def test_parse_classes():
    assert parse_classes(None) is None and parse_classes("all") is None and parse_classes(" ALL ") is None
    assert parse_classes("207, Golden Retriever,1-3") == [207, 207, 1, 2, 3]
    assert parse_classes([5, "tench"]) == [5, 0] and parse_classes(980) == [980]
    assert parse_classes("great_white_shark") == [2] and class_name(134) == "crane bird"
    with pytest.raises(UserError, match="did you mean 'golden retriever'"):
        parse_classes("golden retreiver")
    for bad in ("1000", "-1", "5-2", "", "3,,4"):
        with pytest.raises(UserError):
            parse_classes(bad)
    policy = ClassPolicy("1,2")
    draws = policy.sample(100, torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {1, 2} and torch.equal(draws, policy.sample(100, torch.Generator().manual_seed(0)))
    assert ClassPolicy("7").sample(3).tolist() == [7, 7, 7]
