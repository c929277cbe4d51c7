"""The embedded horse-64 generator, the GAN trainer behind it, and the train-gan command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from discovery.errors import UserError

WEIGHTS = Path(__file__).resolve().parents[1] / "discovery" / "weights" / "horse64.pt"


# ----------------------------------------------------------------------------------------------
# (a) The shipped generator


@pytest.fixture(scope="module")
def horse():
    from discovery.generators import create_generator

    return create_generator("horse-64")


def test_shipped_weights_are_small_and_in_the_package():
    assert WEIGHTS.is_file(), "discovery/weights/horse64.pt must ship with the package"
    assert WEIGHTS.stat().st_size <= 10 * 1024 * 1024
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert state["format"] == "saliency.gan/1"
    assert {"command", "seed", "step"} <= set(state["manifest"])


def test_shipped_generator_makes_varied_non_degenerate_images(horse):
    assert horse.dim_z >= 32 and horse.resolution == 64 and not horse.conditional
    z = horse.sample_latent(16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = horse(z)
    assert images.shape == (16, 3, 64, 64)
    assert torch.isfinite(images).all()
    assert images.min() >= -1 and images.max() <= 1
    # Each image has structure (not a flat colour) ...
    per_image_std = images.flatten(1).std(dim=1)
    assert per_image_std.min() > 0.1, per_image_std
    # ... and the images differ from one another (no mode collapse): RMS pixel distance on a [-1, 1] scale.
    flat = images.flatten(1)
    distances = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    pairwise = distances[~torch.eye(16, dtype=torch.bool)]
    assert pairwise.mean() > 0.25, pairwise.mean()
    assert pairwise.min() > 0.05, pairwise.min()


def test_shipped_generator_output_does_not_depend_on_the_batch(horse):
    z = horse.sample_latent(8, torch.Generator().manual_seed(1))
    with torch.no_grad():
        together = horse(z)
        alone = torch.cat([horse(z[i : i + 1]) for i in range(8)])
        shifted = horse(z + 3.0 * torch.nn.functional.normalize(torch.ones(1, horse.dim_z), dim=1))
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert (shifted - together).abs().mean() > 1e-3  # latent shifts move the image


def test_horse64_is_listed_with_embedded_weights():
    from discovery.generators import get_entry, list_generators

    assert "horse-64" in list_generators()
    assert get_entry("horse-64").weights.embedded == "weights/horse64.pt"


def test_the_embedded_weights_are_checked_against_their_sha256(monkeypatch):
    import dataclasses

    from discovery.generators import create_generator, get_entry
    from discovery.weights import resolve_weights, sha256_of

    entry = get_entry("horse-64")
    assert sha256_of(resolve_weights(entry, None)) == entry.weights.sha256
    monkeypatch.setattr(entry, "weights", dataclasses.replace(entry.weights, sha256="0" * 64))
    with pytest.raises(UserError, match="do not match their sha256"):
        create_generator("horse-64")


def test_horse64_rejects_a_foreign_file(tmp_path):
    from discovery.generators import create_generator

    bad = tmp_path / "other.pt"
    torch.save({"format": "something-else", "weights": {}}, bad)
    with pytest.raises(UserError, match="format"):
        create_generator("horse-64", weights=bad)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        create_generator("horse-64", weights=broken)


# ----------------------------------------------------------------------------------------------
# DiffAugment


def test_diffaugment_is_differentiable_and_shape_preserving():
    from discovery.generators.horse_training import augment_cutout, augment_translation, diff_augment, parse_diffaugment

    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    y = diff_augment(x * 2 - 1, parse_diffaugment("color,translation,cutout"))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    ones = torch.ones(64, 3, 16, 16)
    cut = augment_cutout(ones)
    assert ((cut == 0).float().mean(dim=(1, 2, 3)) <= 0.25 + 1e-6).all() and (cut == 0).any()
    moved = augment_translation(ones)
    assert moved.shape == ones.shape and (moved == 0).any() and (moved == 1).any()
    with pytest.raises(UserError, match="unknown augmentation"):
        parse_diffaugment("color,rotate")
    assert parse_diffaugment("") == []


# ----------------------------------------------------------------------------------------------
# (b) Training, snapshots and resume


def _write_images(folder: Path, n: int = 8, seed: int = 0) -> list[str]:
    """Synthetic 'photos': a coloured ellipse on a two-tone background, of varied sizes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        h, w = int(rng.integers(40, 60)), int(rng.integers(50, 80))
        yy, xx = np.mgrid[:h, :w]
        image = np.zeros((h, w, 3), np.uint8)
        image[:] = rng.integers(0, 255, 3)
        image[h // 2 :] = rng.integers(0, 255, 3)
        cy, cx, ry, rx = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7), h * 0.25, w * 0.2
        image[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = rng.integers(0, 255, 3)
        name = f"img{i:03d}"
        Image.fromarray(image).save(folder / f"{name}{'.png' if i % 2 else '.jpg'}")
        names.append(name)
    return names


TINY = dict(resolution=32, width=8, dim_z=16, batch_size=4, log_every=2, checkpoint_every=2, sample_every=2, grid=2, device="cpu", progress=False)


def test_train_gan_writes_snapshot_logs_grids_and_a_loadable_generator(tmp_path):
    from discovery.generators.horse_training import train_gan
    from discovery.generators import create_generator

    images = tmp_path / "images"
    names = _write_images(images)
    (tmp_path / "train.txt").write_text("\n".join(names[:6]) + "\n")
    out = tmp_path / "run"
    summary = train_gan(images, out, list_file=tmp_path / "train.txt", steps=4, seed=3, export=tmp_path / "shipped.pt", **TINY)
    assert summary["steps"] == 4 and summary["images"] == 6
    for name in ("snapshot.pt", "generator.pt", "summary.json", "stats.jsonl", "stats.csv", "training_options.json", "samples/reals.png", "samples/grid-000004.png"):
        assert (out / name).is_file(), name
    rows = [line for line in (out / "stats.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == 2 and '"loss_d"' in rows[0]
    for path in (out / "generator.pt", tmp_path / "shipped.pt", out / "snapshot.pt"):
        G = create_generator("horse-64", weights=path)
        assert (G.dim_z, G.resolution) == (16, 32)
        with torch.no_grad():
            x = G(G.sample_latent(3, torch.Generator().manual_seed(0)))
        assert x.shape == (3, 3, 32, 32) and torch.isfinite(x).all() and x.abs().max() <= 1


@pytest.mark.parametrize("recipe", [dict(d_norm="spectral", loss="hinge"), dict(d_norm="batch", loss="nonsaturating")])
def test_resume_continues_bit_for_bit(tmp_path, recipe):
    from discovery.generators.horse_training import train_gan

    images = tmp_path / "images"
    _write_images(images)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train_gan(images, straight, steps=6, seed=1, **recipe, **TINY)
    train_gan(images, interrupted, steps=2, seed=1, **recipe, **TINY)  # stopped after the step-2 snapshot
    with pytest.raises(UserError, match="--resume"):
        train_gan(images, interrupted, steps=6, seed=1, **recipe, **TINY)  # refuses to overwrite a run
    other = {"spectral": "batch", "batch": "spectral"}[recipe["d_norm"]]
    with pytest.raises(UserError, match="d_norm"):
        train_gan(images, interrupted, steps=6, seed=1, resume=True, **{**recipe, "d_norm": other}, **TINY)
    train_gan(images, interrupted, steps=6, seed=1, resume=True, **recipe, **TINY)
    a = torch.load(straight / "snapshot.pt", weights_only=True)
    b = torch.load(interrupted / "snapshot.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for net in ("G", "D", "G_ema"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)
    stats_a = [line.split('"seconds"')[0] for line in (straight / "stats.jsonl").read_text().splitlines()]
    stats_b = [line.split('"seconds"')[0] for line in (interrupted / "stats.jsonl").read_text().splitlines()]
    assert stats_a == stats_b


def test_resume_without_a_snapshot_is_a_user_error(tmp_path):
    from discovery.generators.horse_training import train_gan

    images = tmp_path / "images"
    _write_images(images, n=2)
    with pytest.raises(UserError, match="nothing to resume"):
        train_gan(images, tmp_path / "run", steps=2, resume=True, **TINY)


# ----------------------------------------------------------------------------------------------
# (c) Command-line errors: exit code 2 and one line


def _cli_error(argv, capsys) -> str:
    from saliency.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("saliency train-gan: error:") and "\n" not in err, err
    return err


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert "no such folder" in _cli_error(["train-gan", "--images", str(tmp_path / "missing"), "--out", out], capsys)

    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    assert "images/ sub-folder" in _cli_error(["train-gan", "--images", str(empty), "--out", out], capsys)

    corrupt = tmp_path / "corrupt"
    _write_images(corrupt, n=2)
    (corrupt / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert "broken.jpg" in _cli_error(["train-gan", "--images", str(corrupt), "--out", out], capsys)

    good = tmp_path / "good"
    names = _write_images(good, n=2)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{names[0]}\nhorse999\n")
    assert "horse999" in _cli_error(["train-gan", "--images", str(good), "--list", str(listing), "--out", out], capsys)
    assert "--list" in _cli_error(["train-gan", "--images", str(good), "--list", str(tmp_path / "nope.txt"), "--out", out], capsys)
    assert "--steps" in _cli_error(["train-gan", "--images", str(good), "--steps", "0", "--out", out], capsys)
    assert "nothing to resume" in _cli_error(["train-gan", "--images", str(good), "--resume", "--out", out], capsys)


def test_cli_trains_and_exports(tmp_path, capsys):
    from saliency.cli import main

    images = tmp_path / "images"
    _write_images(images, n=4)
    export = tmp_path / "exported.pt"
    argv = ["train-gan", "--images", str(images), "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2",
            "--width", "4", "--checkpoint-every", "1", "--sample-every", "1", "--export", str(export), "--no-progress", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert export.is_file() and (tmp_path / "run" / "summary.json").is_file()
