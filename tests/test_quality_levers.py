"""The levers of a better detector: the optimised direction, two-direction masks, latents from a file, self-training."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import discovery
import saliency
from discovery.directions import Directions
from discovery.errors import UserError
from discovery.generators import create_generator
from saliency.cli import main
from saliency.masks import TwoDirectionMaskRule

HORSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "weizmann-horse"
TINY = {"encoder": "tu-resnet10t", "encoder_depth": 3, "decoder_channels": (32, 16, 8)}


def test_optimised_direction_recovers_the_background_factor(procedural_generator, tmp_path):
    found = discovery.discover(procedural_generator, method="melas-kyriazi", out=tmp_path / "mk", steps=150, batch_size=16, lr=1e-2,
                               charts=0,
                               progress=False, device="cpu")
    background = procedural_generator.factor_directions["background_brightness"]
    lighten, darken = found.matrix
    # Procedural discs sit near the centre: lightening the centre prior against the rest is darkening the background.
    assert float(lighten @ background) < -0.95 and float(darken @ background) > 0.95  # the partner does the opposite
    assert torch.allclose(found.matrix.norm(dim=1), torch.ones(2), atol=1e-5)
    saved = discovery.load_directions(tmp_path / "mk" / "directions.pt")
    assert saved.background["index"] == 0 and saved.background["partner"] == 1 and saved.background["sign"] == 1
    assert saved.background["source"] == "melas-kyriazi objective"  # the ranking did not overrule the objective
    assert len(saved.stats["background_score"]) == 2


def test_two_direction_rule_on_constructed_images():
    rule = TwoDirectionMaskRule(bimodality=0, component_ratio=0.0, max_area=1.01)
    darkened = torch.full((1, 3, 8, 8), -0.5)   # G(z + r v_d)
    lightened = torch.full((1, 3, 8, 8), -0.6)  # G(z + r v_l): brighter only on a 3 x 4 block
    lightened[:, :, 2:5, 1:5] = 0.4
    masks, keep = rule(darkened, lightened)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:5, 1:5] = True
    assert keep.tolist() == [True] and torch.equal(masks[0], expected)


class _TwoLights(torch.nn.Module):
    """z[:, 0] lights a centred square, z[:, 1] darkens it: a generator whose two directions the rule needs."""

    def forward(self, z):
        square = torch.zeros(1, 1, 16, 16)
        square[..., 4:12, 4:12] = 1
        level = torch.tanh(z[:, 0] - z[:, 1])[:, None, None, None] * 0.8
        return (square * level - (1 - square) * 0.2).expand(-1, 3, -1, -1)


def test_two_direction_synthesis_uses_the_recorded_partner(tmp_path):
    G = discovery.wrap_generator(_TwoLights(), dim_z=4, name="two-lights")
    directions = Directions(torch.eye(4)[:2], "two-lights", "truth", shift_scale=6.0)
    rule = TwoDirectionMaskRule(bimodality=0)
    with pytest.raises(UserError, match="needs a partner direction"):
        saliency.synthesize(directions, tmp_path / "none", generator=G, index=0, sign=1, n=2, rule=rule, progress=False, preview=0)
    directions.set_background(0, 1, "truth")
    directions.background["partner"] = 1
    manifest = saliency.synthesize(directions, tmp_path / "pairs", generator=G, index="auto", sign=1, n=4, rule=rule, progress=False,
                                   preview=0, device="cpu")
    assert manifest["directions"]["partner"] == 1 and manifest["rule"]["name"] == "two-direction"
    from saliency.pairs import open_pairs

    pairs = open_pairs(tmp_path / "pairs")
    expected = np.zeros((16, 16), np.uint8)
    expected[4:12, 4:12] = 1
    assert all(np.array_equal(pairs[i][1], expected) for i in range(len(pairs)))


def test_latents_from_a_file(procedural_generator, tmp_path, capsys):
    G = procedural_generator
    directions = Directions(torch.stack(list(G.factor_directions.values())), "procedural", "truth", shift_scale=3.0)
    directions.save(tmp_path / "d.pt")
    bank = torch.randn(5, G.dim_z, generator=torch.Generator().manual_seed(1))
    np.save(tmp_path / "latents.npy", bank.numpy())
    common = dict(generator="procedural", index=3, sign=1, rule="intensity", rule_options={"threshold": 0.85}, progress=False,
                  preview=0, device="cpu", batch_size=5)
    manifest = saliency.synthesize(tmp_path / "d.pt", tmp_path / "p0", n=5, latents=tmp_path / "latents.npy", latent_noise=0.0,
                                   latent_order="cycle", **common)
    assert manifest["latents"]["count"] == 5 and manifest["latents"]["noise"] == 0.0 and manifest["latents"]["order"] == "cycle"
    from saliency.pairs import open_pairs
    from saliency.synthesis import images_to_uint8

    pairs = open_pairs(tmp_path / "p0")
    kept = [int(key) for key in pairs.keys]
    expected = images_to_uint8(G(bank)).numpy()
    for i, key in enumerate(kept):  # with no noise and cycling, pair k is exactly G(latents[k])
        assert np.array_equal(pairs[i][0], expected[key % 5])
    run_json = json.loads((tmp_path / "p0" / "run.json").read_text())
    assert run_json["settings"]["latents"]["path"] == str((tmp_path / "latents.npy").resolve())
    np.save(tmp_path / "wide.npy", np.zeros((3, G.dim_z + 1), np.float32))
    code = main(["synthesize", "--directions", str(tmp_path / "d.pt"), "--latents", str(tmp_path / "wide.npy"), "--out",
                 str(tmp_path / "p1"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"latents of width {G.dim_z + 1}, but the generator's dim_z is {G.dim_z}" in err
    assert not (tmp_path / "p1").exists()


# ----------------------------------------------------------------------------- self-training
@pytest.fixture(scope="module")
def segmenter_file(tmp_path_factory) -> Path:
    from saliency.segmenter import build_segmenter, save_segmenter, segmenter_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seg") / "segmenter.pt"
    save_segmenter(build_segmenter(**TINY), segmenter_config(TINY["encoder"], None, TINY["encoder_depth"], TINY["decoder_channels"], 32), path)
    return path


def _photo_folder(root: Path, inverted_masks: bool) -> Path:
    """Photos under images/ and their masks under masks/ (inverted ones would change any result that read them)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(1, 9):
        shutil.copy(HORSES / "images" / f"horse{i:03d}.jpg", root / "images")
        mask = np.asarray(Image.open(HORSES / "masks" / f"horse{i:03d}.png"))
        Image.fromarray(255 - mask if inverted_masks else mask).save(root / "masks" / f"horse{i:03d}.png")
    return root


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def test_self_training_never_reads_a_mask_and_resumes_bit_for_bit(segmenter_file, tmp_path, monkeypatch):
    opened = []
    original_open = Image.open

    def recording_open(fp, *args, **kwargs):
        opened.append(str(fp))
        return original_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    options = dict(rounds=2, steps=2, batch_size=4, keep=0.75, min_area=0.0, max_area=1.0, refine="components", tta="flip",
                   val_fraction=0.25, device="cpu", progress=False)
    straight = tmp_path / "straight"
    saliency.self_train(segmenter_file, _photo_folder(tmp_path / "a", False) / "images", straight, **options)
    assert not [path for path in opened if "/masks/" in path and "/a/" in path]  # not one mask file opened
    # The same photos with inverted masks beside them: the same result, to the bit.
    inverted = tmp_path / "inverted"
    saliency.self_train(segmenter_file, _photo_folder(tmp_path / "b", True) / "images", inverted, **options)
    for key, value in _state(straight / "segmenter.pt").items():
        assert torch.equal(value, _state(inverted / "segmenter.pt")[key]), key
    # One round, then resumed to two: the same weights as the straight run.
    split = tmp_path / "split"
    saliency.self_train(segmenter_file, tmp_path / "a" / "images", split, **{**options, "rounds": 1})
    saliency.self_train(segmenter_file, tmp_path / "a" / "images", split, **options, resume=True)
    for key, value in _state(straight / "segmenter.pt").items():
        assert torch.equal(value, _state(split / "segmenter.pt")[key]), key
    labels = json.loads((straight / "round-01" / "labels.json").read_text())
    assert labels["summary"]["kept"] == 6 and len(labels["scores"]) == 8
    summary = json.loads((straight / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    with pytest.raises(UserError, match="other settings"):
        saliency.self_train(segmenter_file, tmp_path / "a" / "images", split, **{**options, "lr": 0.1}, resume=True)
    with pytest.raises(UserError, match="tta"):
        saliency.self_train(segmenter_file, tmp_path / "a" / "images", split, **{**options, "tta": "none"}, resume=True)
