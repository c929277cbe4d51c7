"""``saliency pipeline``: discover -> synthesize -> train-segmenter -> evaluate from one config."""

NAME = "pipeline"
HELP = "run discover, synthesize, train-segmenter and evaluate from one YAML config"
DESCRIPTION = """Run the whole chain from one YAML file whose sections hold each sub-command's options
(see saliency/configs/demo.yaml). Finished stages are skipped, interrupted ones resumed."""


def add_arguments(parser):
    parser.add_argument("--config", required=True, help="YAML file with sections discover, synthesize, train_segmenter, evaluate")
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per stage, report.html)")


def run(args):
    from saliency.pipeline import load_config, run_pipeline

    run_pipeline(load_config(args.config), args.out, device=args.device, seed=args.seed)


from saliency.commands.registry import register_command  # noqa: E402

register_command(NAME, HELP, add_arguments, run, globals().get("DESCRIPTION"))
