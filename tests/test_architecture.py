"""The open architecture: plugins, registries, stage functions, safe files and imported direction formats.

Everything here runs the real command line or the real library calls on tiny generators.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import discovery
import saliency
from discovery.directions import Directions
from discovery.errors import UserError
from discovery.generators import GENERATORS, create_generator, wrap_generator
from saliency.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_block(name: str) -> str:
    """The fenced code block between the README's ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``."""
    text = README.read_text(encoding="utf-8")
    block = text.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0]
    return block.strip().split("\n", 1)[1].rsplit("```", 1)[0]


# The README's plugin example, run as the user would run it: a module producing a disc whose brightness
# against the background follows z[:, 0] (so the mask rules find masks), returned by a factory.
PLUGIN_SOURCE = _readme_block("plugin-example")
ENTRY_POINTS = _readme_block("entry-point-example")

QUICK_DISCOVER = ["--method", "hessian", "--samples", "2", "--charts", "1", "--chart-rows", "1", "--chart-columns", "3", "--device", "cpu", "--no-progress"]
PERMISSIVE_RULE = ["--rule", "lighting", "--bimodality", "0", "--max-area", "1.01", "--component-ratio", "0"]
TINY_UNET = ["--encoder", "tu-resnet10t", "--encoder-depth", "3", "--decoder-channels", "32,16,8", "--image-size", "32"]


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _chain(capsys, tmp_path: Path, generator: str) -> dict:
    """discover -> synthesize -> train-segmenter through the command line with one plugin generator."""
    found, pairs, seg = tmp_path / "found", tmp_path / "pairs", tmp_path / "seg"
    code, _, err = _cli(capsys, "discover", "--generator", generator, "--out", found, *QUICK_DISCOVER)
    assert code == 0, err
    directions = discovery.load_directions(found / "directions.pt")
    assert directions.dim_z == 6 and directions.background is not None
    # synthesize needs no --generator: the directions file names the plugin.
    code, _, err = _cli(capsys, "synthesize", "--directions", found / "directions.pt", "--n", "12", "--batch-size", "8",
                        "--shard-size", "6", "--out", pairs, *PERMISSIVE_RULE, "--device", "cpu", "--no-progress", "--preview", "0")
    assert code == 0, err
    manifest = json.loads((pairs / "manifest.json").read_text())
    assert manifest["pairs"] == 12
    code, _, err = _cli(capsys, "train-segmenter", "--data", pairs, "--out", seg, *TINY_UNET, "--steps", "2", "--batch-size", "4",
                        "--val-fraction", "0.2", "--val-pairs", "2", "--workers", "0", "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert (seg / "segmenter.pt").is_file()
    return manifest


def test_plugin_generator_from_a_file_runs_every_stage(tmp_path, capsys):
    plugin = tmp_path / "my_gan.py"
    plugin.write_text(PLUGIN_SOURCE)
    manifest = _chain(capsys, tmp_path, f"{plugin}:make")
    assert manifest["generator"]["name"] == f"{plugin.resolve()}:make" and manifest["generator"]["resolution"] == 32
    # Weights and options go to the factory.
    weights = tmp_path / "disc.pt"
    torch.save({"grid": torch.zeros(2, 32, 32)}, weights)
    G = create_generator(f"{plugin}:make", weights=weights, contrast=0.1)
    assert float(G(torch.zeros(1, 6)).std()) < 0.2  # the all-zero grid: every pixel is at the same distance


def test_plugin_generator_from_an_installed_entry_point(tmp_path, capsys, monkeypatch):
    # A tiny installed package: its module and the dist-info pip writes, on sys.path.
    site = tmp_path / "site"
    (site / "disc_gan_plugin").mkdir(parents=True)
    (site / "disc_gan_plugin" / "__init__.py").write_text(PLUGIN_SOURCE)
    info = site / "disc_gan_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: disc-gan-plugin\nVersion: 0.1\n")
    line = next(line.strip() for line in ENTRY_POINTS.splitlines() if "=" in line and "disc_gan_plugin" in line)
    (info / "entry_points.txt").write_text(f"[saliency.generators]\n{line}\n")  # the README's declaration, as pip writes it
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(GENERATORS, "_loaded", False)  # look at the entry points again
    try:
        code, out, _ = _cli(capsys, "generators")
        assert code == 0
        line = next(line for line in out.splitlines() if line.startswith("disc-gan "))
        assert "plugin: entry point disc_gan_plugin:make of disc-gan-plugin" in line and "Disc GAN of the plugin tests" in line
        _chain(capsys, tmp_path, "disc-gan")
    finally:
        GENERATORS.remove("disc-gan")


def test_module_plugin_spec_and_bad_specs(tmp_path, capsys, monkeypatch):
    (tmp_path / "mod_gan.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    G = create_generator("mod_gan:make")
    assert G.dim_z == 6 and G.resolution == 32 and not G.training
    for spec, message in [(f"{tmp_path}/missing.py:make", "not found"), ("mod_gan:nothing", "no callable 'nothing'"),
                          ("no_such_module_xyz:make", "cannot import module")]:
        code, _, err = _cli(capsys, "discover", "--generator", spec, "--out", tmp_path / "x", *QUICK_DISCOVER)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
        assert not (tmp_path / "x").exists()


class TutorialDCGAN(nn.Module):
    """The PyTorch DCGAN tutorial's generator (nz = 100, z of shape (N, 100, 1, 1)), narrowed to ngf = 8."""

    def __init__(self, nz=100, ngf=8):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh(),
        )

    def forward(self, z):
        return self.main(z)


def test_wrap_generator_checks_the_module_before_any_run(tmp_path):
    torch.manual_seed(0)
    module = TutorialDCGAN().train()  # left in train mode, as a user's module often is
    with pytest.raises(UserError, match="latent_shape"):  # flat latents into ConvTranspose2d: named, not a conv error later
        wrap_generator(module, dim_z=100)
    G = wrap_generator(module, latent_shape=(100, 1, 1), name="tutorial")
    assert G.dim_z == 100 and G.resolution == 64 and not module.training
    assert not any(p.requires_grad for p in module.parameters())
    statistics = [b.clone() for b in module.buffers()]
    discovery.discover(G, method="sefa", out=tmp_path / "sefa", charts=1, chart_rows=1, chart_columns=3, progress=False)
    discovery.discover(G, method="ganspace", out=None, samples=64, top_k=3, rank_background=False, progress=False)
    discovery.discover(G, method="hessian", out=None, samples=1, top_k=2, exact=False, rank_background=False, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(statistics, module.buffers()))  # batch-norm statistics untouched
    # The library call writes what the command writes.
    for name in ("directions.pt", "summary.json", "background_ranking.json", "background_candidates.png", "charts/index.html"):
        assert (tmp_path / "sefa" / name).is_file(), name
    with pytest.raises(UserError, match="64 px but resolution=32"):
        wrap_generator(module, latent_shape=(100, 1, 1), resolution=32)

    class ZeroToOne(nn.Module):
        def forward(self, z):
            return torch.sigmoid(z[:, :3, None, None].expand(-1, 3, 8, 8)) * 255

    with pytest.raises(UserError, match=r"expected values in \[-1, 1\]"):
        wrap_generator(ZeroToOne(), dim_z=4)

    class Flat(nn.Module):
        def forward(self, z):
            return z

    with pytest.raises(UserError, match=r"expected \(2, 3, H, W\)"):
        wrap_generator(Flat(), dim_z=4)
    with pytest.raises(UserError, match="wrap it with"):
        discovery.discover(module, method="sefa")


def test_a_new_method_and_a_new_mask_rule_are_one_registration_each(tmp_path, capsys):
    from dataclasses import dataclass

    from discovery.methods import METHODS, MethodOption, register_method
    from saliency.masks import MASK_RULES, MaskRule, majority_filter, option, register_mask_rule

    @register_method("axes-test", description="coordinate axes (a test method)", options=(MethodOption("count", "how many axes", int),))
    def run_axes(generator, out_dir=None, *, count: int = 3):
        return Directions(torch.eye(generator.dim_z)[:count], generator.name, "axes-test")

    @register_mask_rule
    @dataclass(frozen=True)
    class DarkerRule(MaskRule):
        """Foreground where the shifted image got darker (a test rule)."""

        name = "darker-test"
        default_shift = 3.0
        shift: float | None = option(None, "latent shift")
        margin: float = option(0.0, "how much darker")

        def propose(self, original, shifted):
            gray = lambda x: x.mean(1)  # noqa: E731
            masks = majority_filter(gray(shifted) < gray(original) - self.margin, 0)
            return masks, torch.zeros(len(masks), dtype=torch.int8, device=masks.device)

    try:
        for command, names in (("discover", ("axes-test", "--count", "coordinate axes")), ("synthesize", ("darker-test", "--margin"))):
            with pytest.raises(SystemExit) as done:
                main([command, "--help"])
            out = capsys.readouterr().out
            assert done.value.code == 0 and all(name in out for name in names)
        found = tmp_path / "axes"
        code, _, err = _cli(capsys, "discover", "--generator", "procedural", "--method", "axes-test", "--count", "4", "--out", found,
                            "--charts", "0", "--device", "cpu", "--no-progress")
        assert code == 0, err
        assert discovery.load_directions(found / "directions.pt").count == 4
        code, _, err = _cli(capsys, "synthesize", "--directions", found / "directions.pt", "--rule", "darker-test", "--margin", "0.01",
                            "--n", "4", "--out", tmp_path / "pairs", "--device", "cpu", "--no-progress", "--preview", "0")
        assert code == 0, err
        assert json.loads((tmp_path / "pairs" / "manifest.json").read_text())["rule"] == {"name": "darker-test", "shift": 3.0,
                                                                                          "max_border": None, "margin": 0.01}
        code, _, err = _cli(capsys, "synthesize", "--directions", found / "directions.pt", "--rule", "lighting", "--margin", "0.1",
                            "--out", tmp_path / "p2", "--device", "cpu")
        assert code == 2 and "--margin: does not apply to the lighting rule" in err
    finally:
        METHODS.remove("axes-test")
        MASK_RULES.remove("darker-test")


def test_every_command_is_registered():
    from saliency.commands import COMMANDS

    # A command module renamed or removed breaks this (and the import in saliency/commands/__init__.py).
    assert COMMANDS.names() == ["generators", "discover", "directions", "synthesize", "train-segmenter", "self-train", "evaluate", "predict",
                                "export", "explore", "train-gan", "pipeline", "demo"]


# ----------------------------------------------------------------------------- files never run code
class _Payload:
    """Unpickling this calls open(marker, "w"): a file that runs code when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_files(tmp_path: Path) -> dict:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "saliency.directions/1", "directions": torch.eye(8), "payload": _Payload(marker)}, evil)
    npy_folder = tmp_path / "maps"
    npy_folder.mkdir()
    np.save(npy_folder / "im0.npy", np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    return {"marker": marker, "pt": evil, "maps": npy_folder}


def _tiny_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = np.zeros((16, 16, 3), np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(image).save(root / "images" / "im0.png")
    Image.fromarray(mask).save(root / "masks" / "im0.png")
    return root


def _resume_folder(tmp_path: Path, name: str, evil: Path) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / name.split("-")[0]).write_bytes(evil.read_bytes())
    return folder


def test_no_user_file_runs_code_when_a_command_reads_it(tmp_path, capsys):
    files = _evil_files(tmp_path)
    evil, marker = files["pt"], files["marker"]
    data = _tiny_dataset(tmp_path / "set")
    voynov_out = tmp_path / "voynov"
    voynov_out.mkdir()
    (voynov_out / "checkpoint.pt").write_bytes(evil.read_bytes())
    seg_out = tmp_path / "seg"
    seg_out.mkdir()
    (seg_out / "checkpoint.pt").write_bytes(evil.read_bytes())
    gan_out = tmp_path / "gan"
    gan_out.mkdir()
    (gan_out / "snapshot.pt").write_bytes(evil.read_bytes())
    weights_folder = tmp_path / "deep"
    weights_folder.mkdir()
    (weights_folder / "config.json").write_text("{}")
    (weights_folder / "pytorch_model.bin").write_bytes(evil.read_bytes())
    pairs = tmp_path / "pairs"
    assert main(["synthesize", "--generator", "procedural", "--directions", str(_good_directions(tmp_path)), "--index", "3",
                 "--sign", "1", "--rule", "intensity", "--threshold", "0.85", "--n", "4", "--out", str(pairs), "--device", "cpu",
                 "--no-progress"]) == 0
    commands = [
        ["synthesize", "--directions", evil, "--out", tmp_path / "o1"],
        ["train-segmenter", "--on-the-fly", "--directions", evil, "--out", tmp_path / "o2"],
        ["directions", "show", evil],
        ["directions", "export", evil, "--out", tmp_path / "o3.npy"],
        ["evaluate", "--dataset", data, "--checkpoint", evil, "--out", tmp_path / "o4", "--no-progress"],
        ["evaluate", "--dataset", data, "--predictions", files["maps"], "--out", tmp_path / "o5", "--no-progress"],
        ["discover", "--generator", "horse-64", "--weights", evil, "--method", "sefa", "--out", tmp_path / "o6"],
        ["discover", "--generator", "tiny-dcgan", "--weights", evil, "--method", "sefa", "--out", tmp_path / "o7"],
        ["discover", "--generator", "biggan-128", "--weights", evil, "--method", "sefa", "--out", tmp_path / "o8"],
        ["discover", "--generator", "bigbigan-128", "--weights", evil, "--method", "sefa", "--out", tmp_path / "o9"],
        ["discover", "--generator", "biggan-deep-128", "--weights", weights_folder, "--method", "sefa", "--out", tmp_path / "o10"],
        ["discover", "--generator", "procedural", "--method", "hessian", "--distance", "features", "--feature-net", evil,
         "--out", tmp_path / "o11"],
        ["discover", "--generator", "procedural", "--steps", "2", "--resume", "--out", voynov_out],
        ["train-segmenter", "--data", pairs, "--resume", "--out", seg_out, *TINY_UNET, "--workers", "0"],
        ["train-gan", "--images", data / "images", "--resume", "--out", gan_out, "--steps", "2"],
    ]
    for argv in commands:
        code, _, err = _cli(capsys, *argv, "--device", "cpu")
        assert code == 2, (argv, err)
        errors = [line for line in err.splitlines() if "error:" in line]  # progress bars may precede it
        assert len(errors) == 1 and err.strip().endswith(errors[0]) and "Traceback" not in err, (argv, err)
        assert not marker.exists(), argv
    for argv in commands[:4] + commands[6:10]:  # the refusal says why
        code, _, err = _cli(capsys, *argv, "--device", "cpu")
        assert "never unpickled" in err, (argv, err)


def _good_directions(tmp_path: Path) -> Path:
    G = create_generator("procedural")
    path = tmp_path / "good.pt"
    Directions(torch.stack(list(G.factor_directions.values())), "procedural", "truth", shift_scale=3.0).save(path)
    return path


# ----------------------------------------------------------------------------- imported formats
def test_imported_direction_formats_round_trip(tmp_path, capsys):
    rng = torch.Generator().manual_seed(0)
    dim, count = 8, 5
    matrix = torch.randn(count, dim, generator=rng)
    vector = torch.randn(dim, generator=rng)
    cases = {}
    np.save(tmp_path / "boundary.npy", vector.numpy()[None])  # InterFaceGAN / SeFa: (1, dim)
    cases["boundary.npy"] = vector[None]
    np.save(tmp_path / "matrix.npy", matrix.numpy())
    cases["matrix.npy"] = matrix
    torch.save(vector, tmp_path / "bg_direction.pth")  # the 2021 code's BigBiGAN background vector
    cases["bg_direction.pth"] = vector[None]
    torch.save({"direction": matrix}, tmp_path / "named.pt")
    cases["named.pt"] = matrix
    # GANLatentDiscovery: nn.Linear(K, dim) weights (dim, K) for linear / proj, log_mat_half for ortho, args.json above models/.
    for kind in ("linear", "proj", "ortho"):
        run = tmp_path / f"gld-{kind}"
        (run / "models").mkdir(parents=True)
        (run / "args.json").write_text(json.dumps({"deformator": kind, "shift_scale": 4.5, "gan_type": "BigGAN"}))
        if kind == "ortho":
            half = torch.randn(dim, dim, generator=rng)
            torch.save({"log_mat_half": half}, run / "models" / "deformator_1000.pt")
            expected = torch.linalg.matrix_exp((half - half.T).double()).T.float()
        else:
            weight = torch.randn(dim, count, generator=rng)
            torch.save({"linear.weight": weight, "linear.bias": torch.zeros(dim)}, run / "models" / "deformator_1000.pt")
            expected = weight.T / (weight.T.norm(dim=1, keepdim=True) if kind == "proj" else 1)
        cases[f"gld-{kind}/models/deformator_1000.pt"] = expected
    # GANSpace: lat_comp (K, 1, dim) unit rows, lat_stdev (K,).
    components = matrix / matrix.norm(dim=1, keepdim=True)
    np.savez(tmp_path / "ganspace.npz", lat_comp=components.numpy()[:, None], lat_stdev=np.arange(1, count + 1, dtype=np.float32),
             act_comp=np.zeros((count, 3)))
    cases["ganspace.npz"] = components

    for name, expected in cases.items():
        loaded = Directions.load(tmp_path / name, generator="procedural")
        assert loaded.generator == "procedural" and torch.allclose(loaded.matrix, expected, atol=1e-5), name
        exported = tmp_path / (name.replace("/", "_") + ".export.npy")
        code, out, err = _cli(capsys, "directions", "export", tmp_path / name, "--generator", "procedural", "--out", exported)
        assert code == 0, err
        assert np.allclose(np.load(exported, allow_pickle=False), expected.numpy(), atol=1e-5)
        assert torch.equal(Directions.load(exported, generator="procedural").matrix, loaded.matrix)
    # The scales the sources used are kept, and `show` says what a shift of 1 means.
    assert Directions.load(tmp_path / "gld-ortho/models/deformator_1000.pt", "procedural").shift_scale == 4.5
    assert Directions.load(tmp_path / "bg_direction.pth", "procedural").shift_scale == 6.0  # lighting rule: z + 5 d, as the 2021 code
    ganspace = Directions.load(tmp_path / "ganspace.npz", "procedural")
    assert ganspace.stats["shift_scales"] == pytest.approx([2.0 * (i + 1) for i in range(count)])
    code, out, _ = _cli(capsys, "directions", "show", tmp_path / "bg_direction.pth", "--generator", "procedural")
    assert code == 0 and "a shift of t moves the latent by t x the row" in out and "1 x dim_z 8" in out
    # A foreign file needs --generator; a dimension mismatch and NaN are one line each.
    code, _, err = _cli(capsys, "directions", "show", tmp_path / "matrix.npy")
    assert code == 2 and "pass --generator" in err
    np.save(tmp_path / "short.npy", np.ones(7, np.float32))
    code, _, err = _cli(capsys, "synthesize", "--generator", "procedural", "--directions", tmp_path / "short.npy", "--out",
                        tmp_path / "x", "--device", "cpu")
    assert code == 2 and "dim_z 7 does not match generator 'procedural' (dim_z 8)" in err and not (tmp_path / "x").exists()
    np.save(tmp_path / "nan.npy", np.full(8, np.nan, np.float32))
    code, _, err = _cli(capsys, "directions", "show", tmp_path / "nan.npy", "--generator", "procedural")
    assert code == 2 and "NaN" in err


def test_imported_vector_synthesizes_with_the_papers_shift(tmp_path):
    G = create_generator("procedural")
    np.save(tmp_path / "bg.npy", G.factor_directions["background_brightness"].numpy())
    manifest = saliency.synthesize(tmp_path / "bg.npy", tmp_path / "pairs", generator="procedural", index=0, sign=1, n=4,
                                   rule="intensity", rule_options={"threshold": 0.85}, progress=False, preview=0, device="cpu")
    assert manifest["shift"] == 26.0  # the 2020 paper's r on a unit-free vector (lighting: 5, the 2021 code's r)


# ----------------------------------------------------------------------------- pipeline config
def test_pipeline_config_keys_are_checked(tmp_path, capsys):
    config = {
        "generator": "procedural",
        "discover": {"method": "sefa", "charts": 0},
        "synthesize": {"n": 4, "smoth": 3},
        "train_segmenter": {"steps": 1},
        "evaluate": {"dataset": "weizmann-horse"},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    code, _, err = _cli(capsys, "pipeline", "--config", path, "--out", tmp_path / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "section synthesize: unknown key smoth (known:" in err and "rule_options" in err
    assert not (tmp_path / "run").exists()
    config["synthesize"] = {"n": 4}
    config["discover"]["top_kk"] = 2  # a method option misspelt
    path.write_text(json.dumps(config))
    code, _, err = _cli(capsys, "pipeline", "--config", path, "--out", tmp_path / "run")
    assert code == 2 and "section discover: unknown key top_kk" in err and "top_k" in err
    config["discover"].pop("top_kk")
    config["generater"] = "procedural"
    path.write_text(json.dumps(config))
    code, _, err = _cli(capsys, "pipeline", "--config", path, "--out", tmp_path / "run")
    assert code == 2 and "unknown key generater" in err


def test_the_shipped_configs_are_valid():
    from saliency.pipeline import load_config

    for path in (Path(__file__).resolve().parents[1] / "saliency" / "configs").glob("*.yaml"):
        config = load_config(path)  # every key is an argument of its stage function
        assert set(config) >= {"discover", "synthesize", "train_segmenter", "evaluate"}, path


def test_the_stage_functions_are_the_package_api(tmp_path):
    """The README's Python chain, on the procedural generator, end to end."""
    found = discovery.discover("procedural", method="sefa", out=tmp_path / "d", charts=0, progress=False, device="cpu")
    assert found.background is not None and (tmp_path / "d" / "background_ranking.json").is_file()
    manifest = saliency.synthesize(tmp_path / "d" / "directions.pt", tmp_path / "pairs", n=8, rule="intensity",
                                   rule_options={"threshold": 0.85}, progress=False,
                                   preview=0, device="cpu")
    assert manifest["pairs"] == 8 and manifest["index_choice"]["source"] == found.background["source"]
    summary = saliency.train_segmenter(tmp_path / "seg", data=tmp_path / "pairs", steps=1, batch_size=4, image_size=32, encoder="tu-resnet10t",
                                       encoder_depth=3, decoder_channels=(32, 16, 8), val_fraction=0.25, val_pairs=2, workers=0,
                                       progress=False, device="cpu")
    assert summary["step"] == 1
    with pytest.raises(UserError, match="give exactly one of"):
        saliency.evaluate(_tiny_dataset(tmp_path / "set"), checkpoint=tmp_path / "seg" / "segmenter.pt", baseline="center-prior")
    results = saliency.evaluate(tmp_path / "set", out=tmp_path / "eval", checkpoint=tmp_path / "seg" / "segmenter.pt", progress=False,
                                workers=1, device="cpu")
    assert 0 <= results["metrics"]["iou"] <= 1
    with pytest.raises(UserError, match="unknown option"):
        discovery.discover("procedural", method="sefa", top_kk=3)


def test_library_errors_name_keyword_arguments_and_the_cli_names_flags(tmp_path, capsys):
    with pytest.raises(UserError, match=r"^charts=-1: must not be negative$"):
        discovery.discover("procedural", method="sefa", charts=-1)
    with pytest.raises(UserError, match=r"^batch_size=0: must be at least 1"):
        saliency.predict(tmp_path, checkpoint=tmp_path / "x.pt", out=tmp_path / "o", batch_size=0)
    code, _, err = _cli(capsys, "discover", "--generator", "procedural", "--method", "sefa", "--charts", "-1", "--out", tmp_path / "o")
    assert code == 2 and "--charts -1: must not be negative" in err
