"""discover -> synthesize -> train-segmenter -> evaluate, from one config, calling the stage functions.

Each config section holds the keyword arguments of one library call (``discovery.discover``,
``saliency.synthesize``, ``saliency.train_segmenter``, ``saliency.evaluate``); a key that the call
does not take is a one-line error naming the key and the known ones. The pipeline fills in what
links the stages (each stage's folder, the directions file, the pairs folder, the checkpoint). A
stage whose result file exists is skipped; one that was interrupted is continued with
``resume=True``. The result is one folder per stage and an HTML report.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import yaml

from discovery.errors import UserError
from discovery.runtime import get_logger

STAGES = ("discover", "synthesize", "train_segmenter", "evaluate")
OPTIONAL_STAGES = ("self_train",)  # run when the config has the section (after train_segmenter)
TOP_LEVEL = ("generator", "weights", "generator_options", "classes", "truncation", "seed")
DONE = {"discover": "summary.json", "synthesize": "manifest.json", "train_segmenter": "summary.json", "self_train": "summary.json",
        "evaluate": "summary.json"}
RESUMABLE = {"discover": "checkpoint.pt", "synthesize": "run.json", "train_segmenter": "checkpoint.pt", "self_train": "self_train.json"}
# What the pipeline itself passes to each stage (never from the config).
LINKED = {
    "discover": {"generator", "out", "weights", "generator_options", "seed", "device", "resume", "method_options"},
    "synthesize": {"directions", "out", "generator", "weights", "generator_options", "seed", "device", "resume", "ctx"},
    "train_segmenter": {"out_dir", "data", "synthesizer", "directions", "generator", "weights", "generator_options", "seed",
                        "device", "resume", "ctx"},
    "self_train": {"checkpoint", "out", "synthetic", "seed", "device", "resume"},
    "evaluate": {"out", "checkpoint", "predictions", "baseline", "device"},
}
EXTRA = {"evaluate": {"baselines"}}  # pipeline-only keys: evaluate each named baseline beside the segmenter

log = get_logger("pipeline")


def _stage_functions() -> dict:
    import discovery
    import saliency

    return {"discover": discovery.discover, "synthesize": saliency.synthesize, "train_segmenter": saliency.train_segmenter,
            "self_train": saliency.self_train, "evaluate": saliency.evaluate}


def _known_keys(stage: str, function, section: dict) -> set[str]:
    keys = {k for k, p in inspect.signature(function).parameters.items() if p.kind is not p.VAR_KEYWORD}
    keys = keys - LINKED[stage] | EXTRA.get(stage, set())
    if stage == "discover":
        from discovery.methods import get_method

        keys |= set(get_method(section.get("method", "voynov")).defaults)
    return keys


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
    unknown = sorted(set(map(str, config)) - set(STAGES) - set(OPTIONAL_STAGES) - set(TOP_LEVEL))
    if unknown:
        raise UserError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                        f"(known: {', '.join(TOP_LEVEL)} and the sections {', '.join(STAGES + OPTIONAL_STAGES)})")
    missing = [stage for stage in STAGES if not isinstance(config.get(stage), dict)]
    if missing:
        raise UserError(f"{source}: missing sections {missing}")
    functions = _stage_functions()
    for stage in STAGES + tuple(s for s in OPTIONAL_STAGES if s in config):
        if not isinstance(config[stage], dict):
            raise UserError(f"{source}: section {stage} must be a mapping of options")
        known = _known_keys(stage, functions[stage], config[stage])
        wrong = sorted(set(map(str, config[stage])) - known)
        if wrong:
            raise UserError(f"{source}: section {stage}: unknown key{'s' if len(wrong) > 1 else ''} {', '.join(wrong)} "
                            f"(known: {', '.join(sorted(known))})")
        required = [k for k, p in inspect.signature(functions[stage]).parameters.items()
                    if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and k not in LINKED[stage]]
        missing = [k for k in required if k not in config[stage]]
        if missing:
            raise UserError(f"{source}: section {stage}: missing {', '.join(missing)}")
        if "refine" in config[stage]:  # a refiner whose package is missing fails now, not after an hour of training
            from saliency.refine import require_refiner

            require_refiner(config[stage]["refine"])
    return config


def _run_stage(name: str, out: Path, call) -> float:
    if (out / DONE[name]).exists():
        log.info(f"== {name}: done already ({out}), skipped")
        return 0.0
    resume = (out / RESUMABLE[name]).exists() if name in RESUMABLE else False
    log.info(f"== {name}{' (resumed)' if resume else ''} -> {out}")
    start = time.perf_counter()
    call(resume)
    return time.perf_counter() - start


def run_pipeline(config: dict, out_dir: str | Path, *, device: str = "auto", seed: int | None = None) -> dict:
    """Run every stage into ``out_dir/<stage>`` and write ``out_dir/report.html``."""
    from discovery.io import run_manifest, write_json
    from saliency.pipeline_report import write_pipeline_report

    config = validate_config(config)
    functions = _stage_functions()
    out = Path(out_dir)
    seed = config.get("seed", 0) if seed is None else seed
    options = dict(config.get("generator_options") or {})
    for key in ("classes", "truncation"):
        if config.get(key) is not None:
            options[key] = config[key]
    generator = {"generator": config.get("generator", "horse-64"), "weights": config.get("weights"), "generator_options": options}
    folders = {stage: out / stage.replace("_", "-") for stage in STAGES + tuple(s for s in OPTIONAL_STAGES if s in config)}
    timings: dict[str, float] = {}

    timings["discover"] = _run_stage("discover", folders["discover"], lambda resume: functions["discover"](
        out=folders["discover"], seed=seed, device=device, resume=resume, **generator, **config["discover"]))
    directions = folders["discover"] / "directions.pt"
    timings["synthesize"] = _run_stage("synthesize", folders["synthesize"], lambda resume: functions["synthesize"](
        directions, folders["synthesize"], seed=seed, device=device, resume=resume, **generator, **config["synthesize"]))
    timings["train_segmenter"] = _run_stage("train_segmenter", folders["train_segmenter"], lambda resume: functions["train_segmenter"](
        folders["train_segmenter"], data=folders["synthesize"], seed=seed, device=device, resume=resume, **config["train_segmenter"]))

    checkpoint = folders["train_segmenter"] / "segmenter.pt"
    if "self_train" in config:
        timings["self_train"] = _run_stage("self_train", folders["self_train"], lambda resume: functions["self_train"](
            checkpoint, out=folders["self_train"], synthetic=folders["synthesize"], seed=seed, device=device, resume=resume,
            **config["self_train"]))
        checkpoint = folders["self_train"] / "segmenter.pt"

    evaluate = dict(config["evaluate"])
    baselines = evaluate.pop("baselines", []) or []
    evaluations = {"gan-segmenter": folders["evaluate"] / "gan-segmenter"}
    timings["evaluate"] = _run_stage("evaluate", evaluations["gan-segmenter"], lambda resume: functions["evaluate"](
        out=evaluations["gan-segmenter"], checkpoint=checkpoint, device=device, **evaluate))
    raw = {k: v for k, v in evaluate.items() if k not in ("refine", "refine_options", "tta")}  # baselines as they are
    for baseline in baselines:
        evaluations[baseline] = folders["evaluate"] / baseline
        timings[f"evaluate {baseline}"] = _run_stage("evaluate", evaluations[baseline], lambda resume, b=baseline: functions["evaluate"](
            out=evaluations[b], baseline=b, **raw))

    report = write_pipeline_report(out, folders, evaluations)
    summary = {"stages": {k: str(v) for k, v in folders.items()}, "seconds": timings, **report, "manifest": run_manifest(config=config)}
    write_json(summary, out / "summary.json")
    return summary
