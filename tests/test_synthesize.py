"""Pair synthesis end to end on generators whose objects are known discs."""

import json
from pathlib import Path
import tarfile

import numpy as np
import pytest
import torch
from torch import nn

from discovery.directions import Directions
from discovery.errors import UserError
from discovery.generators import wrap_generator
from discovery.images import to_uint8
from saliency.masks import IntensityMaskRule, LightingMaskRule
from saliency.pairs import open_pairs
from saliency.direction_choice import choose_sign
from saliency.synthesis import PairSynthesizer, batch_latents, write_pairs as synthesize

BACKGROUND = 3  # index of procedural's background_brightness factor among FACTORS
INTENSITY = IntensityMaskRule(threshold=0.85)  # procedural's whitest background has luma 0.9


@pytest.fixture
def directions(procedural_generator):
    rows = torch.stack(list(procedural_generator.factor_directions.values()))
    # shift_scale 3: the intensity rule's default shift becomes 26 x 3 / 6 = 13 (background at its brightest).
    return Directions(rows, generator="procedural", method="truth", shift_scale=3.0)


def true_discs(G, z: torch.Tensor, grow: float = 0.0) -> np.ndarray:
    """The procedural generator's discs (distance < radius + grow pixels), from its documented geometry."""
    f = G.factors(z)
    cx, cy = 0.45 * torch.tanh(f[:, 0] / 2), 0.45 * torch.tanh(f[:, 1] / 2)
    radius = 0.32 + 0.14 * torch.tanh(f[:, 4] / 2) + grow * 2 / (G.grid.shape[-1] - 1)
    distance = torch.sqrt((G.grid[0][None] - cx[:, None, None]) ** 2 + (G.grid[1][None] - cy[:, None, None]) ** 2)
    return (distance < radius[:, None, None]).numpy()


def check_pairs_against_generator(G, dataset, seed, batch_size, min_iou=0.5):
    """Every pair's image is G(z) of its key's latent, and its mask is that latent's disc.

    A threshold near the background level also takes the disc's soft edge, so masks must lie
    between the disc shrunk by one pixel and grown by 1.5 (at 32 px, a ring that large is
    a third of a small disc: ``min_iou`` is checked against the exact disc on top).
    """
    by_batch = {}
    for i, key in enumerate(dataset.keys):
        batch, position = divmod(int(key), batch_size)
        by_batch.setdefault(batch, []).append((i, position))
    for batch, items in by_batch.items():
        z, _ = batch_latents(G, seed, batch, batch_size)
        images, discs = to_uint8(G(z)), true_discs(G, z)
        inner, outer = true_discs(G, z, grow=-1.0), true_discs(G, z, grow=1.5)
        for i, position in items:
            image, mask = dataset[i]
            np.testing.assert_array_equal(image, images[position])
            assert set(np.unique(mask)) <= {0, 1}
            assert not (inner[position] & (mask == 0)).any() and not ((mask == 1) & ~outer[position]).any(), dataset.keys[i]
            disc = discs[position]
            iou = (mask.astype(bool) & disc).sum() / (mask.astype(bool) | disc).sum()
            assert iou >= min_iou, (dataset.keys[i], iou)


def shard_bytes(out):
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


def test_shards_hold_the_generators_images_and_disc_masks(procedural_generator, directions, tmp_path):
    out = tmp_path / "pairs"
    manifest = synthesize(procedural_generator, directions, BACKGROUND, out, n=23, rule=INTENSITY,
                          batch_size=8, shard_size=5, seed=3, progress=False, preview=6)
    assert manifest["pairs"] == 23 and manifest["shift"] == pytest.approx(13.0)
    assert manifest["counts"]["candidates"] >= 23 and 0 <= manifest["rejection_rate"] < 1
    assert [s["pairs"] for s in manifest["shards"]] == [5, 5, 5, 5, 3]
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"pairs-r00-0000{i}.tar" for i in range(5)]
    with tarfile.open(out / "shards" / "pairs-r00-00000.tar") as tar:
        names = tar.getnames()
    assert names[:2] == ["00000000.image.png", "00000000.mask.png"] and len(names) == 10
    assert (out / "preview.png").is_file()
    dataset = open_pairs(out)
    assert len(dataset) == 23 and dataset.keys == sorted(dataset.keys)
    check_pairs_against_generator(procedural_generator, dataset, seed=3, batch_size=8)

    # The PNG layout holds the very same pairs.
    png = synthesize(procedural_generator, directions, BACKGROUND, tmp_path / "png", n=23, rule=INTENSITY,
                     batch_size=8, shard_size=5, seed=3, format="png", progress=False, preview=0)
    assert png["counts"]["candidates"] == manifest["counts"]["candidates"]
    same = open_pairs(tmp_path / "png")
    assert same.keys == dataset.keys
    for i in range(len(same)):
        for a, b in zip(same[i], dataset[i]):
            np.testing.assert_array_equal(a, b)


class LightingToy(nn.Module):
    """Procedural's discs in grey; the background factor lightens the disc and darkens the rest."""

    def __init__(self, procedural):
        super().__init__()
        self.procedural = procedural

    def forward(self, z):
        G = self.procedural
        f = G.factors(z)
        cx, cy = 0.45 * torch.tanh(f[:, 0] / 2), 0.45 * torch.tanh(f[:, 1] / 2)
        radius = 0.32 + 0.14 * torch.tanh(f[:, 4] / 2)
        distance = torch.sqrt((G.grid[0][None] - cx[:, None, None]) ** 2 + (G.grid[1][None] - cy[:, None, None]) ** 2 + 1e-8)
        disc = torch.sigmoid((radius[:, None, None] - distance) / G.edge)[:, None]
        step = 0.35 * torch.tanh(f[:, BACKGROUND] / 3)[:, None, None, None]
        return (disc * (0.3 + step) + (1 - disc) * (-0.3 - step)).expand(-1, 3, -1, -1)


@pytest.mark.parametrize("storage", ["png", "shards"])
def test_pairs_reach_the_disk_before_the_record_that_commits_them(procedural_generator, directions, tmp_path, monkeypatch, storage):
    """Power-loss order: every file of a unit is fsynced before its unit record, and each rename's
    folder after the rename (recorded through os.fsync's file descriptors)."""
    import os

    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to name the synced files")
    monkeypatch.setattr(os, "fsync", recording_fsync)
    out = tmp_path / "out"
    synthesize(procedural_generator, directions, BACKGROUND, out, n=7, rule=INTENSITY, batch_size=8, shard_size=3, seed=3,
               format=storage, progress=False, preview=0)
    records = sorted(str(p) for p in (out / "progress").glob("r00-*.json"))
    assert len(records) == 3
    position = {path: synced.index(path) for path in synced if path in records or path.endswith(".png") or ".tar" in path}
    for record in records:
        unit = json.loads(open(record).read())
        # atomic writes fsync the temporary file (".NAME.xxxx.tmp") before renaming it to NAME
        record_sync = max(i for i, path in enumerate(synced) if Path(path).name.startswith(f".{Path(record).name}."))
        if storage == "png":
            keys = [f"{k:08d}" for k in range(int(unit["first_key"]), int(unit["last_key"]) + 1)]
            files = [str(out / kind / f"{key}.png") for key in keys for kind in ("images", "masks") if (out / kind / f"{key}.png").exists()]
            assert files and all(position[f] < record_sync for f in files), record
            assert str(out / "images") in synced and str(out / "masks") in synced
        else:
            shard = str(out / unit["file"])
            tmp_syncs = [i for i, path in enumerate(synced) if path.endswith(".tar.tmp") and Path(path).name.startswith(f".{Path(shard).name}")]
            assert tmp_syncs and tmp_syncs[0] < record_sync, record
            assert any(path == str(out / "shards") and i > record_sync for i, path in enumerate(synced))
    assert str(out) in synced  # the manifest's rename, flushed in its folder


def test_lighting_rule_end_to_end(procedural_generator, directions, tmp_path):
    G = wrap_generator(LightingToy(procedural_generator), dim_z=8, resolution=32, name="lighting-toy")
    G.factors, G.grid = procedural_generator.factors, procedural_generator.grid
    rule = LightingMaskRule()  # paper shift 5 at shift_scale 6
    lighting_directions = Directions(directions.matrix, generator="lighting-toy", method="truth", shift_scale=6.0)
    sign, probe = choose_sign(G, lighting_directions, BACKGROUND, rule, samples=32)
    assert sign == 1 and probe["+1"]["keep_rate"] > 0.9 and probe["-1"]["keep_rate"] == 0.0
    # With no area limit the wrong sign keeps masks too, but they are the background: they run into
    # the image border, so the probe overrules a wrong preference.
    unlimited = LightingMaskRule(max_area=1.01, bimodality=0)
    sign, probe = choose_sign(G, lighting_directions, BACKGROUND, unlimited, samples=32, prefer=-1)
    assert sign == 1 and probe["-1"]["keep_rate"] > 0.5
    assert probe["+1"]["border_coverage"] < 0.1 < 0.9 < probe["-1"]["border_coverage"]
    images, masks, keep = PairSynthesizer(G, lighting_directions, BACKGROUND, rule).sample(8, torch.Generator().manual_seed(0))
    assert images.dtype == torch.uint8 and images.shape == (8, 32, 32, 3) and masks.shape == (8, 32, 32) and keep.dtype == torch.bool
    synthesize(G, lighting_directions, BACKGROUND, tmp_path / "l", n=12, rule=rule, batch_size=8, shard_size=5,
               seed=1, progress=False, preview=0)
    check_pairs_against_generator(G, open_pairs(tmp_path / "l"), seed=1, batch_size=8, min_iou=0.95)


class Interrupt(Exception):
    pass


def interrupt_after(batches):
    seen = []

    def callback(batch_index):
        seen.append(batch_index)
        if len(seen) == batches:
            raise Interrupt

    return callback


@pytest.mark.parametrize("storage", ["shards", "png"])
def test_resume_after_a_kill_gives_the_uninterrupted_pairs(procedural_generator, directions, tmp_path, storage):
    options = dict(n=30, rule=INTENSITY, batch_size=4, shard_size=4, seed=5, format=storage, progress=False, preview=0, workers=2)
    reference = synthesize(procedural_generator, directions, BACKGROUND, tmp_path / "ref", **options)

    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        synthesize(procedural_generator, directions, BACKGROUND, out, on_batch=interrupt_after(4), **options)
    assert not (out / "manifest.json").exists()
    with pytest.raises(UserError, match="no manifest.json"):
        open_pairs(out)
    units = sorted((out / "progress").glob("r00-*.json"))
    assert 0 < len(units) < 8
    # What a SIGKILL leaves: a half-written next shard, a record whose shard never got renamed,
    # stray PNG files past the last committed unit (a pair's image without its mask).
    next_unit = len(units)
    (out / "progress" / f"r00-{next_unit:05d}.json").write_text('{"rank": 0, "unit": %d, "pairs": 4' % next_unit)
    if storage == "shards":
        (out / "shards" / f".pairs-r00-{next_unit:05d}.tar.tmp").write_bytes(b"\0" * 700)
    else:
        (out / "images" / "00000029.png").write_bytes(b"not a png")
        (out / "images" / ".00000030.png.tmp").write_bytes(b"")
    with pytest.raises(UserError, match="already holds"):
        synthesize(procedural_generator, directions, BACKGROUND, out, **options)

    resumed = synthesize(procedural_generator, directions, BACKGROUND, out, resume=True, **options)
    assert resumed["counts"]["candidates"] == reference["counts"]["candidates"]
    assert resumed["counts"]["rejected"] == reference["counts"]["rejected"]
    if storage == "shards":
        assert shard_bytes(out) == shard_bytes(tmp_path / "ref")
        assert resumed["shards"] == reference["shards"]
    else:
        for sub in ("images", "masks"):
            got = {p.name: p.read_bytes() for p in (out / sub).iterdir()}
            want = {p.name: p.read_bytes() for p in (tmp_path / "ref" / sub).iterdir()}
            assert got == want

    # Losing the last shard (and the manifest) costs only that shard.
    if storage == "shards":
        last = sorted((out / "shards").glob("*.tar"))[-1]
        last.unlink()
        (out / "manifest.json").unlink()
        synthesize(procedural_generator, directions, BACKGROUND, out, resume=True, **options)
        assert shard_bytes(out) == shard_bytes(tmp_path / "ref")


def test_ranks_split_batches_and_rank_zero_merges(procedural_generator, directions, tmp_path):
    out = tmp_path / "ranks"
    options = dict(n=13, rule=INTENSITY, batch_size=4, shard_size=3, seed=2, progress=False, preview=4, world_size=2)
    partial = synthesize(procedural_generator, directions, BACKGROUND, out, rank=1, **options)
    assert partial["manifest_written"] is False and not (out / "manifest.json").exists()
    manifest = synthesize(procedural_generator, directions, BACKGROUND, out, rank=0, **options)
    assert manifest["pairs"] == 13 and [r["pairs"] for r in manifest["counts"]["by_rank"]] == [7, 6]
    files = sorted(p.name for p in (out / "shards").glob("*.tar"))
    assert files == ["pairs-r00-00000.tar", "pairs-r00-00001.tar", "pairs-r00-00002.tar",
                     "pairs-r01-00000.tar", "pairs-r01-00001.tar"]
    dataset = open_pairs(out)
    assert len(dataset) == 13 and len(set(dataset.keys)) == 13
    ranks = {p.name[7:9]: {n.split(".")[0] for n in tarfile.open(p).getnames()} for p in (out / "shards").glob("*.tar")}
    for rank, keys in ranks.items():
        assert all((int(k) // 4) % 2 == int(rank) for k in keys)
    check_pairs_against_generator(procedural_generator, dataset, seed=2, batch_size=4)


# ----------------------------------------------------------------------------- command line
@pytest.fixture
def directions_file(directions, tmp_path):
    path = tmp_path / "directions.pt"
    directions.save(path)
    return path


def test_command_line_writes_pairs(directions_file, tmp_path, capsys):
    from saliency.cli import main

    out = tmp_path / "cli"
    argv = ["synthesize", "--directions", str(directions_file), "--index", "3", "--rule", "intensity",
            "--threshold", "0.85", "--n", "10", "--out", str(out), "--batch-size", "8", "--shard-size", "4",
            "--device", "cpu", "--no-progress", "--preview", "4"]
    assert main(argv) == 0
    assert "wrote 10 pairs" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sign"] == 1 and manifest["sign_choice"]["probe"]["-1"]["keep_rate"] == 0.0
    # --index auto finds the background direction and the sign the intensity rule needs.
    auto = [value for value in argv]
    auto[auto.index("--index") + 1], auto[auto.index("--out") + 1] = "auto", str(tmp_path / "auto")
    assert main(auto) == 0
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert manifest["directions"]["index"] == 3 and manifest["sign"] == 1
    assert manifest["index_choice"]["background_dimming_sign"] == -1
    assert manifest["generator"]["name"] == "procedural" and manifest["directions"]["path"] == str(directions_file)
    assert len(open_pairs(out)) == 10


def test_index_auto_follows_the_recorded_choice_and_the_rules_sign(procedural_generator, directions, tmp_path):
    from saliency.direction_choice import choose_sign, resolve_direction, rule_sign

    # Nothing recorded: scored on the spot (discovery.background); procedural's background factor, darkened by -1.
    fresh = Directions(directions.matrix, generator="procedural", method="truth", shift_scale=3.0)
    index, sign, provenance = resolve_direction(procedural_generator, fresh, INTENSITY, seed=0)
    assert index == BACKGROUND and provenance["index_choice"]["background_dimming_sign"] == -1
    assert fresh.background == {**fresh.background, "index": BACKGROUND, "sign": -1}  # and recorded in the directions
    assert rule_sign(INTENSITY, -1) == 1 and rule_sign(LightingMaskRule(), -1) == -1
    assert sign == 1  # the intensity rule brightens the background
    # The probe keeps the preferred sign, and overrules a wrong preference (whose masks are rejected or touch the border).
    assert choose_sign(procedural_generator, directions, BACKGROUND, INTENSITY, prefer=1, samples=16)[0] == 1
    assert choose_sign(procedural_generator, directions, BACKGROUND, INTENSITY, prefer=-1, samples=16)[0] == 1
    # A recorded choice (a person's, or discover's ranking) is taken from the file alone, even after a copy and rename.
    stored = Directions(directions.matrix, generator="procedural", method="truth", shift_scale=3.0)
    stored.set_background(2, -1, "a person")
    stored.save(tmp_path / "renamed.pt")
    copied = Directions.load(tmp_path / "renamed.pt")
    index, _, provenance = resolve_direction(procedural_generator, copied, INTENSITY, sign=1)
    assert index == 2 and provenance["index_choice"] == {"source": "a person", "index": 2, "background_dimming_sign": -1}


def test_bad_inputs_exit_2_with_one_line(directions, directions_file, tmp_path, capsys):
    from saliency.cli import main

    def run(*extra, out=None):
        argv = ["synthesize", "--directions", str(directions_file), "--index", "3", "--rule", "intensity",
                "--threshold", "0.85", "--n", "6", "--out", str(out or tmp_path / "o"), "--batch-size", "8",
                "--device", "cpu", "--no-progress", "--sign", "1", "--preview", "0", *extra]
        code = main(argv)
        err = capsys.readouterr().err.strip()
        return code, err

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    wide = tmp_path / "wide.pt"
    Directions(torch.eye(16), generator="procedural", method="truth").save(wide)
    cases = [
        ("--directions", str(tmp_path / "missing.pt")),
        ("--directions", str(corrupt)),
        ("--directions", str(empty)),
        ("--directions", str(wide)),  # dim_z 16 for an 8-dimensional generator
        ("--generator", "tiny-dcgan"),  # the file holds procedural's directions
        ("--index", "7"),
        ("--index", "x"),
        ("--n", "0"),
        ("--component-ratio", "0.3"),  # lighting-only option with the intensity rule
        ("--shard-size", "0"),
    ]
    for case in cases:
        code, err = run(*case)
        assert code == 2 and err.startswith("saliency synthesize: error:") and "\n" not in err, (case, err)

    assert run()[0] == 0
    code, err = run()
    assert code == 2 and "--resume" in err
    code, err = run("--resume", "--seed", "9")
    assert code == 2 and "other settings" in err and "seed" in err


def test_open_pairs_refuses_broken_folders(procedural_generator, directions, tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        open_pairs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no manifest.json"):
        open_pairs(tmp_path / "empty")

    png = tmp_path / "png"
    synthesize(procedural_generator, directions, BACKGROUND, png, n=5, rule=INTENSITY, batch_size=8,
               format="png", progress=False, preview=0)
    mask = sorted((png / "masks").iterdir())[0]
    mask.unlink()
    with pytest.raises(UserError, match="has no mask"):
        open_pairs(png)
    for path in list((png / "images").iterdir()) + list((png / "masks").iterdir()):
        path.unlink()
    with pytest.raises(UserError, match="holds no pairs"):
        open_pairs(png)

    shards = tmp_path / "shards"
    synthesize(procedural_generator, directions, BACKGROUND, shards, n=6, rule=INTENSITY, batch_size=8,
               shard_size=3, progress=False, preview=0)
    shard = shards / "shards" / "pairs-r00-00001.tar"
    shard.write_bytes(shard.read_bytes()[:1500])  # truncated
    with pytest.raises(UserError, match="pairs-r00-00001.tar"):
        open_pairs(shards)
    shard.unlink()
    with pytest.raises(UserError, match="missing"):
        open_pairs(shards)
    (shards / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not readable JSON"):
        open_pairs(shards)


def test_webdataset_reads_the_shards_as_open_pairs_does(procedural_generator, directions, tmp_path):
    import webdataset

    out = tmp_path / "pairs"
    synthesize(procedural_generator, directions, BACKGROUND, out, n=12, rule=INTENSITY, batch_size=8, shard_size=5, progress=False, sign=1)
    ours = open_pairs(out)
    shards = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    assert len(shards) == 3
    samples = list(webdataset.WebDataset(shards, shardshuffle=False).decode("rgb8"))
    assert [s["__key__"] for s in samples] == list(ours.keys)
    for sample, (image, mask) in zip(samples, (ours[i] for i in range(len(ours)))):
        assert np.array_equal(sample["image.png"], image)
        assert np.array_equal(sample["mask.png"][..., 0] > 127, mask > 0)


@pytest.mark.slow
def test_torchrun_ranks_write_the_pairs_of_the_in_process_ranks(procedural_generator, directions, directions_file, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "saliency", "--", "synthesize", "--directions", str(directions_file), "--index", "3", "--sign", "1",
               "--rule", "intensity", "--threshold", "0.85", "--n", "21", "--out", str(out), "--batch-size", "4",
               "--shard-size", "4", "--seed", "1", "--device", "cpu", "--no-progress", "--preview", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["pairs"] == 21

    local = tmp_path / "local"
    options = dict(n=21, rule=INTENSITY, batch_size=4, shard_size=4, seed=1, progress=False, preview=0, world_size=2)
    for rank in (1, 0):
        synthesize(procedural_generator, directions, BACKGROUND, local, rank=rank, **options)
    assert shard_bytes(out) == shard_bytes(local)


def test_pairs_feed_a_dataloader_with_workers(procedural_generator, directions, tmp_path):
    from torch.utils.data import DataLoader, Dataset

    synthesize(procedural_generator, directions, BACKGROUND, tmp_path / "p", n=12, rule=INTENSITY, batch_size=8,
               shard_size=5, progress=False, preview=0)
    dataset = open_pairs(tmp_path / "p")
    assert isinstance(dataset, Dataset)
    dataset[0]  # opens a shard in this process; workers must open their own
    images, masks = next(iter(DataLoader(dataset, batch_size=12, num_workers=2)))
    assert images.shape == (12, 32, 32, 3) and masks.shape == (12, 32, 32) and images.dtype == torch.uint8
    np.testing.assert_array_equal(images[3].numpy(), dataset[3][0])
