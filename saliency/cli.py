"""The ``saliency`` command line: a thin layer that parses options and calls library functions.

Each sub-command lives in ``saliency/commands/<name>.py`` and exposes ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args)``. Bad input raises ``UserError``, printed here as
one line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from discovery.errors import UserError

COMMAND_MODULES = (
    "discover",
    "synthesize",
    "train_segmenter",
    "evaluate",
    "train_gan",
    "pipeline",
    "demo",
    "generators",
)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, except where the help already says what the default is, or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, argparse.SUPPRESS) or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saliency",
        description="Unsupervised GAN latent directions and GAN-based salient object detection.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version="saliency 0.1.0")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"saliency.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"saliency.commands.{module_name}":
                continue  # a command not built yet in this checkout
            raise
        sub = subparsers.add_parser(
            module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP), formatter_class=_Formatter
        )
        module.add_arguments(sub)
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        sub.add_argument("--seed", type=int, default=0, help="random seed; runs are deterministic per seed")
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args._run(args)
    except UserError as exc:
        print(f"saliency {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"saliency {args.command}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
