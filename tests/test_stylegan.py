"""StyleGAN2 / StyleGAN3: the published formats, the reference outputs, the spaces, and discovery on them.

The ``tests/fixtures/stylegan`` pickles were written by NVlabs' own code (stylegan3 repository,
``networks_stylegan2`` and ``networks_stylegan3``) and the ``.pt`` by rosinality's, with the
command in ``make_fixtures.py``; beside each file are the reference implementation's outputs.
"""

import argparse
import collections
import json
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

import discovery
from discovery.errors import UserError
from discovery.generators import create_generator
from discovery.generators.stylegan2 import StyleGAN2Generator
from discovery.generators.stylegan3 import StyleGAN3Generator
from discovery.generators.stylegan_files import read_stylegan_checkpoint
from saliency.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stylegan"
PICKLES = {"sg2-16": ("stylegan2", ""), "sg2-16-cond": ("stylegan2", ""), "sg3t-16": ("stylegan3", "T"), "sg3r-16": ("stylegan3", "R")}


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the published configurations ------------------------------------------------------------------------------


def test_official_1024_configs_have_the_published_parameter_and_entry_counts():
    sg2 = StyleGAN2Generator(mapping_kwargs={"num_layers": 8})
    assert sum(p.numel() for p in sg2.parameters()) == 30_370_060
    assert len(sg2.state_dict()) == 182 and sg2.num_ws == 18
    assert {"mapping.fc7.weight", "mapping.w_avg", "synthesis.b4.const", "synthesis.b1024.conv0.noise_const",
            "synthesis.b1024.torgb.affine.bias", "synthesis.b8.resample_filter"} <= set(sg2.state_dict())
    sg3 = StyleGAN3Generator(mapping_kwargs={"num_layers": 2})
    assert sum(p.numel() for p in sg3.parameters()) == 22_313_167
    assert len(sg3.state_dict()) == 114 and sg3.num_ws == 16
    assert {"synthesis.input.freqs", "synthesis.input.transform", "synthesis.L0_36_512.up_filter",
            "synthesis.L13_1024_32.magnitude_ema", "synthesis.L10_1044_81.down_filter", "synthesis.L14_1024_3.weight"} <= set(sg3.state_dict())
    assert "synthesis.L14_1024_3.up_filter" not in sg3.state_dict()  # the ToRGB layer has no filters


def test_the_float16_layers_nvlabs_mark_run_in_half_precision_and_agree_with_float32(monkeypatch):
    """On CUDA the layers marked use_fp16 run in float16; the same code path is exercised here on CPU."""
    from discovery.generators import stylegan2

    torch.manual_seed(0)
    networks = [StyleGAN2Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=512, channel_max=32, num_fp16_res=2,
                                   mapping_kwargs={"num_layers": 2}),
                StyleGAN3Generator(z_dim=16, w_dim=16, img_resolution=32, channel_base=512, channel_max=32, num_layers=6, num_fp16_res=2)]
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    for network in networks:
        with torch.no_grad():
            full = network.eval()(z)
            seen = []
            monkeypatch.setattr(stylegan2, "runs_half", lambda device: seen.append(device) or True)
            half = network(z)
            monkeypatch.setattr(stylegan2, "runs_half", lambda device: device.type == "cuda")
        assert seen and half.dtype == torch.float32 and torch.isfinite(half).all()
        assert not torch.equal(half, full)  # float16 rounding shows: the half path really ran
        assert (half - full).abs().max() < 0.02 * full.abs().max()


# --- the reference outputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PICKLES))
def test_network_pickles_reproduce_the_reference_implementation(name):
    checkpoint = read_stylegan_checkpoint(FIXTURES / f"{name}.pkl")
    assert (checkpoint.architecture, checkpoint.config) == PICKLES[name]
    network = checkpoint.build().eval()
    expected = torch.load(FIXTURES / f"{name}-expected.pt", weights_only=True)
    with torch.no_grad():
        for psi in (1.0, 0.7):
            ws = network.mapping(expected["z"], expected["c"], truncation_psi=psi)
            torch.testing.assert_close(ws, expected[f"ws_psi{psi}"], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(network.synthesis(ws, noise_mode="const"), expected[f"img_psi{psi}"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(network.synthesis(expected["ws_psi1.0"], noise_mode="none"), expected["img_none"], atol=1e-5, rtol=1e-5)


def test_rosinality_checkpoint_reproduces_the_reference_implementation():
    checkpoint = read_stylegan_checkpoint(FIXTURES / "rosinality-16.pt")  # holds an argparse.Namespace: allowed, nothing else
    assert checkpoint.source == "rosinality" and checkpoint.kwargs["mapping_kwargs"] == {"num_layers": 2}
    network = checkpoint.build().eval()
    expected = torch.load(FIXTURES / "rosinality-16-expected.pt", weights_only=True)
    torch.testing.assert_close(network.mapping.w_avg, expected["latent_avg"])
    with torch.no_grad():
        for psi in (1.0, 0.7):
            # rosinality scales weights before demodulating (its eps differs): agreement to ~1e-6
            torch.testing.assert_close(network(expected["z"], None, truncation_psi=psi), expected[f"img_psi{psi}"], atol=1e-4, rtol=1e-4)


def test_rosinality_flags_are_checked_against_the_file_and_a_missing_latent_avg_is_estimated(tmp_path):
    with pytest.raises(UserError, match="size is 16, not 256"):
        read_stylegan_checkpoint(FIXTURES / "rosinality-16.pt", size=256)
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(FIXTURES / "rosinality-16.pt", weights_only=True, map_location="cpu")
    bare = tmp_path / "g.pt"
    torch.save({"g_ema": data["g_ema"]}, bare)
    checkpoint = read_stylegan_checkpoint(bare)
    assert checkpoint.estimate_w_avg and "w_avg estimated" in checkpoint.notes[0]
    network = checkpoint.build()
    expected = torch.load(FIXTURES / "rosinality-16-expected.pt", weights_only=True)
    # the 10,000-sample estimate is close to the 64-sample mean the reference drew
    assert torch.nn.functional.cosine_similarity(network.mapping.w_avg, expected["latent_avg"], dim=0) > 0.9


# --- the registered generator: spaces, truncation, noise, classes ------------------------------------------------


def _stylegan(name="sg2-16", **options):
    return create_generator("stylegan", weights=FIXTURES / f"{name}.pkl", **options)


@pytest.mark.parametrize("name", ["sg2-16", "sg3t-16"])
def test_the_three_spaces_describe_the_same_images(name):
    in_z, in_w, in_wplus = _stylegan(name, space="z", truncation=0.7), _stylegan(name, space="w", truncation=0.7), _stylegan(name, space="w+", truncation=0.7)
    num_ws, w_dim = in_w.num_ws, in_w.w_dim
    assert (in_z.dim_z, in_w.dim_z, in_wplus.dim_z) == (16, w_dim, num_ws * w_dim)
    z = in_z.sample_latent(4, torch.Generator().manual_seed(3))
    w = in_w.sample_latent(4, torch.Generator().manual_seed(3))
    w_plus = in_wplus.sample_latent(4, torch.Generator().manual_seed(3))
    torch.testing.assert_close(w, in_z.network.mapping(z, None, truncation_psi=0.7)[:, 0])
    torch.testing.assert_close(w_plus, w.repeat(1, num_ws))
    with torch.no_grad():
        images = in_z(z)
        assert images.shape == (4, 3, 16, 16) and torch.isfinite(images).all() and images.abs().max() <= 1
        torch.testing.assert_close(in_w(w), images)
        torch.testing.assert_close(in_wplus(w_plus), images)
        torch.testing.assert_close(in_z(z), images)  # noise_mode const: deterministic
        # W+ can move one layer's w alone
        moved = w_plus.clone()
        moved[:, -w_dim:] += 3.0
        assert not torch.allclose(in_wplus(moved), images)


def test_truncation_zero_gives_one_image_for_every_latent():
    for space in ("z", "w"):
        generator = _stylegan("sg3t-16", space=space, truncation=0.0)
        latents = generator.sample_latent(3, torch.Generator().manual_seed(1))
        with torch.no_grad():
            images = generator(latents)
        assert (images - images[:1]).abs().max() < 1e-6
    untruncated = _stylegan("sg3t-16", space="z")
    with torch.no_grad():
        images = untruncated(untruncated.sample_latent(3, torch.Generator().manual_seed(1)))
    assert (images - images[:1]).abs().max() > 1e-2


def test_noise_modes_and_conditional_classes():
    const, none = _stylegan(noise_mode="const"), _stylegan(noise_mode="none")
    w = const.sample_latent(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(const(w), none(w))
        random = _stylegan(noise_mode="random")
        torch.manual_seed(0)
        first = random(w)
        assert not torch.allclose(first, random(w))
    conditional = _stylegan("sg2-16-cond", space="w", classes="2")
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(5))
    w = conditional.sample_latent(3, torch.Generator().manual_seed(5))
    label = torch.nn.functional.one_hot(torch.tensor([2, 2, 2]), 4).float()
    torch.testing.assert_close(w, conditional.network.mapping(z, label)[:, 0])
    in_z = _stylegan("sg2-16-cond", space="z", classes="1,3")
    assert in_z.conditional and set(in_z.sample_condition(50, torch.Generator().manual_seed(0)).tolist()) == {1, 3}
    with pytest.raises(UserError, match="outside 0-3"):
        _stylegan("sg2-16-cond", classes="7")
    with pytest.raises(UserError, match="unconditional"):
        _stylegan("sg2-16", classes="1")


# --- safety: nothing in a file runs -------------------------------------------------------------------------------


def _persistence_module(monkeypatch):
    """A stand-in ``torch_utils.persistence`` so the test can write pickles in NVlabs' record format."""
    module = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: the package reads records without it
        raise AssertionError("the package must not call the pickle's own reconstruction")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)
    return module


class _Record:
    """Pickles a module as a persistence record: class name, module source, state with init kwargs."""

    def __init__(self, module, class_name, source, init_kwargs=None, extra=None):
        self.module, self.class_name, self.source, self.init_kwargs, self.extra = module, class_name, source, init_kwargs or {}, extra or {}

    def __reduce__(self):
        state = {
            "training": False,
            "_parameters": collections.OrderedDict((k, v) for k, v in self.module._parameters.items()),
            "_buffers": collections.OrderedDict((k, v) for k, v in self.module._buffers.items()),
            "_modules": collections.OrderedDict((k, _Record(v, type(v).__name__, self.source)) for k, v in self.module._modules.items()),
            "_init_args": (),
            "_init_kwargs": self.init_kwargs,
            **self.extra,
        }
        meta = dict(type="class", version=4, module_src=self.source, class_name=self.class_name, state=state)
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,)


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_persistence_pickle_loads_without_running_its_embedded_source(tmp_path, monkeypatch):
    _persistence_module(monkeypatch)
    torch.manual_seed(0)
    network = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=8, channel_base=64, channel_max=8, mapping_kwargs={"num_layers": 2})
    marker = tmp_path / "source-ran"
    source = f"open({str(marker)!r}, 'w').write('ran')\nclass Generator: pass\n"
    kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 64, "channel_max": 8, "num_fp16_res": 0, "conv_clamp": None})
    path = tmp_path / "built.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Record(network, "Generator", source, kwargs), "D": None}))
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")  # as on a user's machine: no NVlabs code installed
    loaded = create_generator("stylegan", weights=path, space="z")
    assert not marker.exists()
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), network(z).clamp(-1, 1))

    # Any other global refuses the whole file, and nothing of it runs.
    _persistence_module(monkeypatch)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _Record(network, "Generator", source, kwargs, extra={"payload": _Evil(marker)})}))
    with pytest.raises(UserError, match=r"refused to load: the pickle names posix\.system|refused to load: the pickle names os\.system"):
        read_stylegan_checkpoint(evil)
    assert not marker.exists()


def test_files_of_other_kinds_get_one_line_saying_what_they_are(tmp_path, capsys):
    text = tmp_path / "notes.pkl"
    text.write_text("not a network\n")
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes((FIXTURES / "sg3t-16.pkl").read_bytes()[:5000])
    biggan_like = tmp_path / "G_ema.pth"
    torch.save({"linear.weight": torch.zeros(2, 2)}, biggan_like)
    tf = tmp_path / "tf.pkl"
    tf.write_bytes(b"\x80\x03cdnnlib.tflib.network\n_unpickle\nq\x00.")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"G_ema": [1, 2, 3]}))
    cases = {
        text: "neither a network pickle nor a PyTorch checkpoint",
        empty: "the file is empty",
        truncated: "not a readable network pickle",
        biggan_like: "not a rosinality StyleGAN2 generator",
        tf: "a TensorFlow StyleGAN pickle; convert it first with NVlabs' legacy.py",
        plain: "no network 'G_ema' in the pickle",
        tmp_path / "absent.pkl": "no such file or folder",
    }
    for path, message in cases.items():
        code, out, err = _cli(capsys, "discover", "--generator", "stylegan", "--weights", path, "--method", "sefa", "--out", tmp_path / "o")
        assert code == 2 and message in err and "Traceback" not in err, (path, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()
    code, _, err = _cli(capsys, "discover", "--generator", "stylegan", "--weights", FIXTURES / "sg2-16.pkl", "--network-key", "D",
                        "--method", "sefa", "--out", tmp_path / "o")
    assert code == 2 and "a Discriminator, not a Generator" in err
    code, _, err = _cli(capsys, "discover", "--generator", "horse-64", "--space", "w", "--method", "sefa", "--out", tmp_path / "o")
    assert code == 2 and "--space does not apply to generator 'horse-64'" in err


# --- discovery and the pipeline on StyleGAN ---------------------------------------------------------------------


def test_sefa_factorises_the_chosen_modulations_and_lifts_them_into_w_plus():
    in_w, in_wplus = _stylegan("sg2-16", space="w"), _stylegan("sg2-16", space="w+")
    layers = in_w.style_layers()
    assert [index for _, index in layers] == list(range(in_w.num_ws - 1))  # the last w only feeds the last torgb
    found_w = discovery.discover(in_w, "sefa", layers="0-1", top_k=4)
    found_wplus = discovery.discover(in_wplus, "sefa", layers="0-1", top_k=4)
    assert found_w.matrix.shape == (4, in_w.w_dim) and found_wplus.matrix.shape == (4, in_wplus.dim_z)
    lifted = found_wplus.matrix.reshape(4, in_w.num_ws, in_w.w_dim)
    assert lifted[:, 2:].abs().max() == 0  # only the chosen layers' w move
    torch.testing.assert_close(lifted[:, 0] * 2 ** 0.5, found_w.matrix, atol=1e-5, rtol=1e-5)
    # the eigenvectors are those of the stacked modulation weights, normalised per row
    weight = torch.cat([in_w.network.synthesis.b4.conv1.affine.weight, in_w.network.synthesis.b8.conv0.affine.weight]).double()
    weight = weight / weight.norm(dim=1, keepdim=True)
    top = torch.linalg.eigh(weight.T @ weight).eigenvectors[:, -1]
    assert abs(float(top @ found_w.matrix[0].double())) > 0.999
    with pytest.raises(UserError, match="act on w, not z"):
        discovery.discover(_stylegan("sg2-16", space="z"), "sefa")
    with pytest.raises(UserError, match="no layer choice"):
        discovery.discover(create_generator("procedural"), "sefa", layers="0")


def test_every_method_and_the_pipeline_run_on_a_stylegan_pickle(tmp_path, capsys):
    weights = FIXTURES / "sg3t-16.pkl"
    common = ["--generator", "stylegan", "--weights", weights, "--device", "cpu", "--no-progress", "--charts", "1"]
    for method, space, extra in [("ganspace", "w", ["--samples", "64"]), ("hessian", "z", ["--samples", "2"]),
                                 ("voynov", "w", ["--steps", "3", "--batch-size", "4"])]:
        out = tmp_path / f"{method}-{space}"
        code, _, err = _cli(capsys, "discover", *common, "--method", method, "--space", space, *extra, "--out", out)
        assert code == 0, err
        found = discovery.load_directions(out / "directions.pt")
        assert found.generator_options["space"] == space and found.dim_z == 16
        if method == "ganspace":
            assert found.manifest["layer"] == "latent"  # GANSpace's PCA of sampled w
    # synthesize and train-segmenter take the directions like any generator's (the file names the pickle and space)
    pairs, seg = tmp_path / "pairs", tmp_path / "seg"
    code, _, err = _cli(capsys, "synthesize", "--directions", tmp_path / "ganspace-w" / "directions.pt", "--n", "8", "--batch-size", "8",
                        "--out", pairs, "--rule", "lighting", "--bimodality", "0", "--max-area", "1.01", "--component-ratio", "0",
                        "--device", "cpu", "--no-progress", "--preview", "0")
    assert code == 0, err
    manifest = json.loads((pairs / "manifest.json").read_text())
    assert manifest["pairs"] == 8 and manifest["generator"]["name"] == "stylegan"
    code, _, err = _cli(capsys, "train-segmenter", "--data", pairs, "--out", seg, "--encoder", "tu-resnet10t", "--encoder-depth", "3",
                        "--decoder-channels", "32,16,8", "--image-size", "16", "--steps", "2", "--batch-size", "4", "--val-fraction", "0.25",
                        "--val-pairs", "2", "--workers", "0", "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert (seg / "segmenter.pt").is_file()


def test_the_explorer_drives_a_stylegan_pickle(tmp_path):
    from saliency.explorer import Explorer

    found = discovery.discover("stylegan", "sefa", out=tmp_path / "w", weights=FIXTURES / "sg2-16.pkl", charts=0, progress=False,
                               device="cpu")
    explorer = Explorer(tmp_path / "w" / "directions.pt")
    assert explorer.has_truncation and not explorer.conditional
    explorer.set_truncation(0.0)  # psi 0: every latent is w_avg
    latents, _ = explorer.latents(0, 3)
    assert (latents - latents[:1]).abs().max() < 1e-6
    row = explorer.images(0, 3, [])
    assert not (explorer.images(0, 3, [(found.background["index"], 3.0)]) == row).all()
    found = discovery.discover("stylegan", "ganspace", out=tmp_path / "z", weights=FIXTURES / "sg2-16-cond.pkl",
                               generator_options={"space": "z"}, samples=32, charts=0, progress=False, device="cpu")
    conditional = Explorer(tmp_path / "z" / "directions.pt")
    assert conditional.conditional
    assert conditional.set_class("2") == "class 2" and "outside 0-3" in conditional.set_class("7")
