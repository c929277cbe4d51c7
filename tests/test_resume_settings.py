"""A resumed job with other settings is refused, every difference named in one line (exit 2)."""

import torch

from saliency.cli import main

TINY_UNET = ["--encoder", "tu-resnet10t", "--encoder-depth", "3", "--decoder-channels", "32,16,8", "--image-size", "32"]


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _pairs(tmp_path, capsys):
    from discovery.directions import Directions
    from discovery.generators import create_generator

    G = create_generator("procedural")
    Directions(torch.stack(list(G.factor_directions.values())), "procedural", "truth", shift_scale=3.0).save(tmp_path / "d.pt")
    code, err = _cli(capsys, "synthesize", "--directions", tmp_path / "d.pt", "--index", "3", "--sign", "1", "--rule", "intensity",
                     "--threshold", "0.85", "--n", "12", "--out", tmp_path / "pairs", "--device", "cpu", "--no-progress")
    assert code == 0, err
    return tmp_path / "pairs"


def test_train_segmenter_resume_with_another_lr_or_seed_is_refused(tmp_path, capsys):
    pairs = _pairs(tmp_path, capsys)
    run = ["train-segmenter", "--data", pairs, "--out", tmp_path / "seg", *TINY_UNET, "--batch-size", "4", "--val-fraction", "0.2",
           "--val-pairs", "2", "--workers", "0", "--checkpoint-every", "1", "--device", "cpu", "--no-progress"]
    assert _cli(capsys, *run, "--steps", "1")[0] == 0
    code, err = _cli(capsys, *run, "--steps", "2", "--resume", "--lr", "0.01", "--seed", "3")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "lr: 0.001 then, 0.01 now" in err and "seed: 0 then, 3 now" in err
    assert _cli(capsys, *run, "--steps", "2", "--resume")[0] == 0  # a longer run with the same settings continues


def test_train_gan_resume_with_another_learning_rate_or_batch_is_refused(tmp_path, capsys):
    from pathlib import Path

    horses = Path(__file__).resolve().parents[2] / "shared" / "data" / "weizmann-horse" / "images"
    images = tmp_path / "images"
    images.mkdir()
    for name in ("horse001.jpg", "horse002.jpg", "horse003.jpg", "horse004.jpg"):
        (images / name).write_bytes((horses / name).read_bytes())
    run = ["train-gan", "--images", images, "--out", tmp_path / "gan", "--width", "4", "--checkpoint-every", "1",
           "--sample-every", "100", "--device", "cpu", "--no-progress"]
    assert _cli(capsys, *run, "--batch-size", "2", "--steps", "1")[0] == 0
    code, err = _cli(capsys, *run, "--batch-size", "4", "--steps", "2", "--resume", "--lr-g", "0.001")
    assert code == 2 and "batch_size: 2 then, 4 now" in err and "lr_g: 0.0002 then, 0.001 now" in err


def test_discover_resume_with_other_weights_is_refused(tmp_path, capsys):
    from discovery.generators import create_generator

    run = ["discover", "--generator", "tiny-dcgan", "--out", tmp_path / "v", "--batch-size", "4", "--rca-samples", "8", "--charts", "0",
           "--checkpoint-every", "1", "--no-background-ranking", "--device", "cpu", "--no-progress"]
    for seed in (0, 1):
        torch.save(create_generator("tiny-dcgan", seed=seed).state_dict(), tmp_path / f"w{seed}.pt")
    assert _cli(capsys, *run, "--weights", tmp_path / "w0.pt", "--steps", "1")[0] == 0
    (tmp_path / "v" / "summary.json").unlink()
    code, err = _cli(capsys, *run, "--weights", tmp_path / "w1.pt", "--steps", "2", "--resume")
    assert code == 2 and "weights:" in err and "w0.pt" in err and "w1.pt" in err


def test_impossible_options_are_one_line(tmp_path, capsys):
    for argv, message in [
        (["train-segmenter", "--data", tmp_path, "--out", tmp_path / "o", "--lr", "nan"], "--lr must be > 0"),
        (["discover", "--generator", "procedural", "--method", "sefa", "--out", tmp_path / "o", "--device", "meta"], "--device meta"),
        (["discover", "--generator", "procedural", "--method", "sefa", "--out", tmp_path / "o", "--device", "mps"], "--device mps"),
        (["synthesize", "--directions", tmp_path / "d.pt", "--out", tmp_path / "o", "--workers", "-1"], "--workers -1"),
        (["discover", "--generator", "procedural", "--weights", tmp_path / "x.pt", "--out", tmp_path / "o"], "takes no weights"),
    ]:
        (tmp_path / "d.pt").write_bytes(b"")
        (tmp_path / "x.pt").write_bytes(b"")
        code, err = _cli(capsys, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (argv, err)
        assert not (tmp_path / "o").exists(), argv
    import pytest

    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors: one line too, no usage block
        main(["discover", "--out", str(tmp_path / "o"), "--no-such-flag"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "--no-such-flag" in err


def test_values_that_enter_a_metric_are_checked(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from saliency.metrics import SaliencyMetrics

    # A 1x1 image gives a finite E-measure (it used to divide by 1e-8 alone and poison the mean).
    metrics = SaliencyMetrics()
    metrics.update(np.array([[0.7]]), np.array([[True]]))
    metrics.update(np.full((4, 4), 0.2), np.zeros((4, 4), bool))
    result = metrics.compute()["metrics"]
    assert all(np.isfinite(result[k]) and 0 <= result[k] < 1.1 for k in ("max_e", "mean_e", "adaptive_e")), result  # (n / (n - 1), as pysodmetrics)
    # A mask of another size than its photo is an error, not a silent stretch.
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.zeros((10, 15), np.uint8)).save(root / "masks" / "a.png")
    code, err = _cli(capsys, "evaluate", "--dataset", root, "--baseline", "center-prior", "--out", tmp_path / "o", "--no-progress")
    assert code == 2 and "the photo is 30x20 but its mask a.png is 15x10" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_unwritable_outputs_fail_before_any_work(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    blocked = tmp_path / "a-file" / "out"
    for argv in (
        ["discover", "--generator", "procedural", "--method", "sefa", "--out", blocked],
        ["synthesize", "--directions", tmp_path / "missing.pt", "--out", blocked],
        ["evaluate", "--dataset", "weizmann-horse", "--baseline", "center-prior", "--out", blocked],
        ["train-segmenter", "--data", tmp_path, "--out", blocked],
    ):
        code, err = _cli(capsys, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot write there" in err and "Traceback" not in err, (argv, err)


def test_logs_survive_a_kill_during_their_write(tmp_path):
    import json

    from discovery.io import remove_stale_temporaries
    from discovery.stats import StatsLogger

    logger = StatsLogger(tmp_path, tensorboard=False)
    for step in (1, 2, 3):
        logger.log(step, loss=1.0 / step)
    logger.close()
    with open(tmp_path / "stats.jsonl", "a") as handle:
        handle.write('{"step": 4, "lo')  # the append a kill interrupted
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    assert remove_stale_temporaries(tmp_path) == 1 and not list(tmp_path.glob(".*.tmp"))
    resumed = StatsLogger(tmp_path, resume_step=3, tensorboard=False)
    assert [row["step"] for row in resumed.rows] == [1, 2, 3]
    resumed.log(4, loss=0.25)
    lines = (tmp_path / "stats.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    assert (tmp_path / "stats.csv").read_text().splitlines()[0] == "step,loss"


def test_written_files_follow_the_umask(tmp_path):
    import os
    import stat

    from discovery.io import atomic_write_text

    atomic_write_text("x", tmp_path / "file.txt")
    mode = stat.S_IMODE(os.stat(tmp_path / "file.txt").st_mode)
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600


def test_a_failed_start_leaves_no_started_looking_folder(tmp_path, capsys):
    pairs = _pairs(tmp_path, capsys)
    out = tmp_path / "never"
    argv = ["synthesize", "--directions", tmp_path / "d.pt", "--index", "3", "--sign", "1", "--rule", "intensity",
            "--threshold", "0.01", "--n", "4", "--out", out, "--device", "cpu", "--no-progress"]  # no mask ever passes
    for _ in range(2):  # the same error again, not "already holds a run"
        code, err = _cli(capsys, *argv)
        assert code == 2 and "no candidate passed the mask rule" in err and not out.exists(), err
    # A corrupt pair read by a DataLoader worker is one line too (not the worker's traceback).
    from saliency.training_data import split_by_key

    assert pairs.is_dir()
    png = tmp_path / "png-pairs"
    code, err = _cli(capsys, "synthesize", "--directions", tmp_path / "d.pt", "--index", "3", "--sign", "1", "--rule", "intensity",
                     "--threshold", "0.85", "--n", "8", "--format", "png", "--out", png, "--device", "cpu", "--no-progress")
    assert code == 0, err
    keys = sorted(p.stem for p in (png / "images").glob("*.png"))
    _, held_out = split_by_key(keys, 0.1, 1)
    for index, key in enumerate(keys):
        if index not in held_out:
            (png / "images" / f"{key}.png").write_bytes(b"not a png")
    code, err = _cli(capsys, "train-segmenter", "--data", png, "--out", tmp_path / "seg", *TINY_UNET, "--steps", "2", "--batch-size", "2",
                     "--val-fraction", "0.1", "--val-pairs", "1", "--workers", "1", "--device", "cpu", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a readable PNG" in err and "Traceback" not in err, err


def test_a_full_disk_during_a_run_is_one_line_and_keeps_what_was_written(tmp_path, capsys, monkeypatch):
    import errno

    import saliency.pairs as pairs_module

    pairs = _pairs(tmp_path, capsys)  # a first run that completes
    written = []
    original = pairs_module._write_json_durable

    def full_disk_after_one(obj, path):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        return original(obj, path)

    monkeypatch.setattr(pairs_module, "_write_json_durable", full_disk_after_one)
    code, err = _cli(capsys, "synthesize", "--directions", tmp_path / "d.pt", "--index", "3", "--sign", "1", "--rule", "intensity",
                     "--threshold", "0.85", "--n", "12", "--shard-size", "4", "--out", tmp_path / "full", "--device", "cpu",
                     "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "No space left on device" in err and "kept whole" in err, err
    assert pairs.is_dir() and len(written) == 1
    monkeypatch.setattr(pairs_module, "_write_json_durable", original)
    code, err = _cli(capsys, "synthesize", "--directions", tmp_path / "d.pt", "--index", "3", "--sign", "1", "--rule", "intensity",
                     "--threshold", "0.85", "--n", "12", "--shard-size", "4", "--out", tmp_path / "full", "--device", "cpu",
                     "--no-progress", "--resume")
    assert code == 0, err


def test_train_segmenter_failing_early_leaves_no_logs(tmp_path, capsys):
    png = tmp_path / "png-pairs"
    _pairs(tmp_path, capsys)
    code, err = _cli(capsys, "synthesize", "--directions", tmp_path / "d.pt", "--index", "3", "--sign", "1", "--rule", "intensity",
                     "--threshold", "0.85", "--n", "8", "--format", "png", "--out", png, "--device", "cpu", "--no-progress")
    assert code == 0, err
    for image in sorted((png / "images").glob("*.png"))[1:]:
        image.write_bytes(b"not a png")  # fails in the first training steps, after the logs were opened
    out = tmp_path / "seg"
    code, err = _cli(capsys, "train-segmenter", "--data", png, "--out", out, *TINY_UNET, "--steps", "2", "--batch-size", "2",
                     "--val-fraction", "0.1", "--val-pairs", "1", "--workers", "0", "--device", "cpu", "--no-progress")
    assert code == 2 and "not a readable PNG" in err and not out.exists(), err
