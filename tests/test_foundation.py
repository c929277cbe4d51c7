"""The shared foundation: registry, directions files, checkpoints, weights resolution, logs, CLI errors."""

import json
import urllib.error

import pytest
import torch
from torch import nn

from discovery.checkpoints import load_state_dict_strict
from discovery.directions import Directions, load_directions
from discovery.errors import UserError
from discovery.generators import WeightsSource, create_generator, get_entry, list_generators, wrap_generator
from discovery.generators.registry import GENERATORS, GeneratorEntry
from discovery.stats import StatsLogger
from discovery.weights import resolve_weights
from saliency.cli import main


def test_registry_lists_builtin_generators_and_rejects_unknown_names():
    names = list_generators()
    assert {"procedural", "tiny-dcgan"} <= set(names)
    with pytest.raises(UserError, match="unknown generator"):
        create_generator("no-such-gan")


def test_created_generators_are_frozen_deterministic_and_in_range():
    for name in ("procedural", "tiny-dcgan"):
        G = create_generator(name)
        assert not G.training and not any(p.requires_grad for p in G.parameters())
        z = G.sample_latent(4, torch.Generator().manual_seed(1))
        assert z.shape == (4, G.dim_z)
        x1, x2 = G(z), G(z)
        assert x1.shape == (4, 3, G.resolution, G.resolution)
        assert torch.equal(x1, x2) and x1.min() >= -1 and x1.max() <= 1
        # Different latents give different images: the generator is not constant.
        assert (x1[0] - x1[1]).abs().mean() > 1e-3


def test_procedural_factor_directions_move_only_their_factor():
    G = create_generator("procedural")
    directions = G.factor_directions
    basis = torch.stack(list(directions.values()))
    assert torch.allclose(basis @ basis.T, torch.eye(len(directions)), atol=1e-5)
    z = G.sample_latent(3, torch.Generator().manual_seed(0))
    background_change = (G(z + 2.0 * directions["background_brightness"]) - G(z)).abs().amax(1)
    hue_change = (G(z + 2.0 * directions["object_hue"]) - G(z)).abs().amax(1)
    # Background and object pixels are disjoint: the two factors change complementary regions.
    assert (background_change > 0.05).float().mean() > 0.3 and (hue_change > 0.05).float().mean() > 0.05
    assert ((background_change > 0.2) & (hue_change > 0.2)).float().mean() < 0.06  # only the soft edge ring


def test_wrapped_module_behaves_like_a_registered_generator():
    module = nn.Sequential(nn.Linear(4, 3 * 8 * 8), nn.Tanh(), nn.Unflatten(1, (3, 8, 8)))
    G = wrap_generator(module, dim_z=4, resolution=8)
    z = G.sample_latent(2, torch.Generator().manual_seed(0))
    assert G(z).shape == (2, 3, 8, 8) and G.sample_condition(2) is None


def test_directions_round_trip_and_bad_files(tmp_path):
    matrix = torch.randn(5, 8)
    directions = Directions(matrix, generator="procedural", method="voynov", shift_scale=3.0, stats={"accuracy": [0.1] * 5})
    directions.save(tmp_path / "directions.pt")
    loaded = load_directions(tmp_path / "directions.pt")
    assert torch.equal(loaded.matrix, matrix) and loaded.generator == "procedural" and loaded.stats["accuracy"] == [0.1] * 5
    z = torch.zeros(2, 8)
    assert torch.allclose(loaded.shift(z, 1, torch.tensor([1.0, -2.0])), torch.stack([matrix[1], -2 * matrix[1]]))
    with pytest.raises(UserError, match="out of range"):
        loaded.direction(5)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt"):
        load_directions(tmp_path / "junk.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a directions file"):
        load_directions(tmp_path / "other.pt")
    with pytest.raises(UserError, match="file not found"):
        load_directions(tmp_path / "missing.pt")


def test_strict_loading_reports_missing_unexpected_and_misshaped_keys(tmp_path):
    module = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    state = module.state_dict()
    state["extra.weight"] = torch.zeros(1)
    state["1.weight"] = torch.zeros(5, 5)
    del state["0.bias"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(UserError) as info:
        load_state_dict_strict(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), tmp_path / "bad.pt")
    message = str(info.value)
    assert "bad.pt" in message and "1 missing (0.bias)" in message and "1 unexpected (extra.weight)" in message
    assert "1 mis-shaped (1.weight (5, 5) vs (2, 4))" in message and "\n" not in message
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "bad.pt").read_bytes()[:100])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_state_dict_strict(module, tmp_path / "truncated.pt")


def test_offline_download_fails_with_where_to_put_the_file(tmp_path, monkeypatch):
    entry = GeneratorEntry("fake-gan", builder=None, weights=WeightsSource(filename="G.pth", url="https://example.org/G.pth"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(UserError) as info:
        resolve_weights(entry, None)
    message = str(info.value)
    assert str(tmp_path / "cache" / "fake-gan" / "G.pth") in message and "--weights" in message
    assert not (tmp_path / "cache" / "fake-gan" / "G.pth.part").exists()
    # A file the user placed by hand is found without any download.
    (tmp_path / "cache" / "fake-gan").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache" / "fake-gan" / "G.pth").write_bytes(b"x")
    assert resolve_weights(entry, None) == tmp_path / "cache" / "fake-gan" / "G.pth"
    with pytest.raises(UserError, match="no such file"):
        resolve_weights(entry, tmp_path / "nope.pth")


def test_plain_http_downloads_try_https_first_and_name_the_checksum_otherwise(tmp_path, monkeypatch, caplog):
    import io
    import logging

    from discovery.weights import download, sha256_of

    tried = []

    class Response(io.BytesIO):
        headers = {"Content-Length": "5"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def https_refused(url, timeout=None):
        tried.append(url)
        if url.startswith("https://"):
            raise urllib.error.URLError("SSL: certificate verify failed")
        return Response(b"hello")

    monkeypatch.setattr("urllib.request.urlopen", https_refused)
    with caplog.at_level(logging.WARNING, logger="saliency.download"):
        path = download("http://example.org/data/set.zip", tmp_path / "set.zip")
    assert tried == ["https://example.org/data/set.zip", "http://example.org/data/set.zip"]
    assert path.read_bytes() == b"hello" and sha256_of(path) in caplog.text and "plain http" in caplog.text
    tried.clear()
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout=None: tried.append(url) or Response(b"hello"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="saliency.download"):
        download("http://example.org/data/set.zip", tmp_path / "again.zip")
    assert tried == ["https://example.org/data/set.zip"] and "plain http" not in caplog.text


def test_stats_logger_resume_cuts_back_to_the_checkpoint(tmp_path):
    logger = StatsLogger(tmp_path, tensorboard=False)
    for step in (10, 20, 30):
        logger.log(step, loss=step / 10)
    logger.close()
    resumed = StatsLogger(tmp_path, resume_step=20, tensorboard=False)
    resumed.log(30, loss=9.0)
    rows = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30] and rows[-1]["loss"] == 9.0
    assert (tmp_path / "stats.csv").read_text().splitlines()[0] == "step,loss"


def test_cli_lists_generators(capsys):
    assert main(["generators"]) == 0
    assert "procedural" in capsys.readouterr().out


def test_cli_bad_device_is_a_one_line_error():
    from discovery.runtime import resolve_device

    with pytest.raises(UserError, match="--device"):
        resolve_device("tpu:7")


def test_pin_cuda_device_gives_a_bare_cuda_an_index(monkeypatch):
    """``torch.cuda.set_device`` rejects a bare ``cuda``: the device CUDA has current, or the torchrun rank's."""
    from discovery.runtime import pin_cuda_device

    pinned = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pinned.append(device))
    assert pin_cuda_device(torch.device("cuda")) == torch.device("cuda", 3)
    assert pin_cuda_device(torch.device("cuda"), local_rank=1) == torch.device("cuda", 1)
    assert pin_cuda_device(torch.device("cuda:2"), local_rank=1) == torch.device("cuda", 2)
    assert pinned == [torch.device("cuda", 3), torch.device("cuda", 1), torch.device("cuda", 2)]
    assert all(device.index is not None for device in pinned)
    assert pin_cuda_device(torch.device("cpu")) == torch.device("cpu") and len(pinned) == 3


def test_registry_entries_name_their_weight_source():
    for name in list_generators():
        entry = get_entry(name)
        assert entry.name == name and callable(entry.builder)
    assert "procedural" in GENERATORS
