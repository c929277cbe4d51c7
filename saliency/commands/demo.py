"""``saliency demo``: the whole pipeline on the embedded generator and real horse photos, offline."""

from pathlib import Path

NAME = "demo"
HELP = "run the full pipeline on the embedded horse-64 generator and evaluate on Weizmann horses"
DESCRIPTION = """Discover directions in the embedded horse-64 generator, choose the background direction
automatically, synthesize image/mask pairs, train a UNet and evaluate it (with baselines) on the
held-out test split of the Weizmann horse set. Runs on CPU in minutes; writes OUT/report.html."""

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def add_arguments(parser):
    parser.add_argument("--images", default="../shared/data/weizmann-horse", help="Weizmann horse folder (images/, masks/, test.txt)")
    parser.add_argument("--out", default="outputs/demo", help="output folder")
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="pipeline config to run")


def run(args):
    from discovery.errors import UserError
    from saliency.pipeline import load_config, run_pipeline

    images = Path(args.images)
    if not (images / "images").is_dir() or not (images / "test.txt").is_file():
        raise UserError(f"--images {images}: expected the Weizmann horse folder with images/, masks/ and test.txt")
    config = load_config(args.config)
    config["evaluate"]["root"] = str(images)
    if "self_train" in config:  # the unlabelled train photos of the same folder; the list ships with the package
        from saliency.datasets import repository_root

        config["self_train"]["images"] = str(images / "images")
        listed = Path(config["self_train"].get("list_file") or "")
        if config["self_train"].get("list_file") and not listed.is_file():
            config["self_train"]["list_file"] = str(repository_root() / listed)
    summary = run_pipeline(config, args.out, device=args.device, seed=args.seed)
    print(f"report: {summary['report']}")


from saliency.commands.registry import register_command  # noqa: E402

register_command(NAME, HELP, add_arguments, run, globals().get("DESCRIPTION"))
