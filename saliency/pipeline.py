"""discover -> synthesize -> train-segmenter -> evaluate, from one config file.

The pipeline is the documented chain of sub-commands, run in-process: each config section
holds the options of one sub-command, so everything a stage accepts on the command line it
accepts here, with the same validation and the same outputs. A stage whose ``summary.json``
exists is skipped; one that was interrupted is continued with ``--resume``. The result is one
folder per stage and an HTML report that puts the pieces side by side.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from discovery.errors import UserError

STAGES = ("discover", "synthesize", "train_segmenter", "evaluate")
RESUMABLE = {"discover": "checkpoint.pt", "synthesize": "shards", "train_segmenter": "checkpoint.pt"}


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: file not found (expected a YAML pipeline config)")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return validate_config(config, str(path))


def validate_config(config, source: str = "config") -> dict:
    if not isinstance(config, dict):
        raise UserError(f"{source}: expected a mapping with sections {', '.join(STAGES)}")
    unknown = set(config) - set(STAGES) - {"generator", "weights", "seed", "classes", "truncation"}
    if unknown:
        raise UserError(f"{source}: unknown keys {sorted(unknown)} (expected generator, weights, seed and sections {', '.join(STAGES)})")
    missing = [stage for stage in STAGES if not isinstance(config.get(stage), dict)]
    if missing:
        raise UserError(f"{source}: missing sections {missing}")
    return config


def _flags(options: dict) -> list[str]:
    """{'batch_size': 16, 'amp': False, 'x': None} -> ['--batch-size', '16', '--no-amp']."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(map(str, value))]
        else:
            argv += [flag, str(value)]
    return argv


def _run_stage(name: str, argv: list[str], out: Path) -> float:
    from saliency.cli import main

    if (out / "summary.json").exists():
        print(f"== {name}: done already ({out}), skipped")
        return 0.0
    marker = RESUMABLE.get(name.replace("-", "_"))
    if marker and (out / marker).exists():
        argv = argv + ["--resume"]
    print(f"== {name}: saliency {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise UserError(f"pipeline stopped: `saliency {' '.join(argv)}` failed with exit code {code}")
    return time.perf_counter() - start


def run_pipeline(config: dict, out_dir: str | Path, *, device: str = "auto", seed: int | None = None) -> dict:
    """Run every stage into ``out_dir/<stage>`` and write ``out_dir/report.html``."""
    from discovery.io import run_manifest, write_json
    from saliency.pipeline_report import write_pipeline_report

    config = validate_config(config)
    out = Path(out_dir)
    seed = config.get("seed", 0) if seed is None else seed
    common = ["--device", device, "--seed", str(seed)]
    generator = _flags({k: config.get(k) for k in ("generator", "weights", "classes", "truncation")})
    folders = {stage: out / stage.replace("_", "-") for stage in STAGES}
    timings: dict[str, float] = {}

    discover = dict(config["discover"])
    timings["discover"] = _run_stage(
        "discover", ["discover", *generator, *_flags(discover), "--out", str(folders["discover"]), *common], folders["discover"]
    )
    directions = folders["discover"] / "directions.pt"

    synthesize = dict(config["synthesize"])
    timings["synthesize"] = _run_stage(
        "synthesize",
        ["synthesize", *generator, "--directions", str(directions), *_flags(synthesize), "--out", str(folders["synthesize"]), *common],
        folders["synthesize"],
    )

    train = dict(config["train_segmenter"])
    timings["train_segmenter"] = _run_stage(
        "train-segmenter",
        ["train-segmenter", "--data", str(folders["synthesize"]), *_flags(train), "--out", str(folders["train_segmenter"]), *common],
        folders["train_segmenter"],
    )

    evaluate = dict(config["evaluate"])
    baselines = evaluate.pop("baselines", []) or []
    evaluations = {"gan-segmenter": folders["evaluate"] / "gan-segmenter"}
    timings["evaluate"] = _run_stage(
        "evaluate",
        ["evaluate", *_flags(evaluate), "--checkpoint", str(folders["train_segmenter"] / "segmenter.pt"), "--out", str(evaluations["gan-segmenter"]), *common],
        evaluations["gan-segmenter"],
    )
    for baseline in baselines:
        evaluations[baseline] = folders["evaluate"] / baseline
        timings[f"evaluate {baseline}"] = _run_stage(
            f"evaluate ({baseline})",
            ["evaluate", *_flags(evaluate), "--baseline", baseline, "--out", str(evaluations[baseline]), *common],
            evaluations[baseline],
        )

    report = write_pipeline_report(out, folders, evaluations)
    summary = {"stages": {k: str(v) for k, v in folders.items()}, "seconds": timings, **report, "manifest": run_manifest(config=config)}
    write_json(summary, out / "summary.json")
    return summary
