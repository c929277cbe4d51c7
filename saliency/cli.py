"""The ``saliency`` command line: a thin layer that parses options and calls library functions.

Sub-commands come from ``saliency.commands.COMMANDS``. The launcher builds the torchrun rank
context once (``args.ctx``) and configures logging; bad input raises ``UserError``, printed here
as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from discovery.errors import UserError, command_line_call


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, except where the help already says what the default is, or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, argparse.SUPPRESS) or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (the usage block is what --help is for)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from saliency.commands import COMMANDS

    parser = _Parser(
        prog="saliency",
        description="Unsupervised GAN latent directions and GAN-based salient object detection.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version="saliency 0.1.0")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.description or command.help, formatter_class=_Formatter)
        command.add_arguments(sub)
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        sub.add_argument("--seed", type=int, default=0, help="random seed; runs are deterministic per seed")
        sub.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from discovery.runtime import configure_logging, rank_context

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    ctx = None
    try:
        args.ctx = ctx = rank_context()
        with command_line_call():  # errors keep naming the flags
            args._run(args)
    except UserError as exc:
        print(f"saliency {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"saliency {args.command}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk, not the input: full, read-only, permissions, during the run
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"saliency {args.command}: error: {where}{exc.strerror or exc}; what was written before is kept whole (writes are "
              "atomic); make room or fix the folder, then rerun (with --resume where the command has it)", file=sys.stderr)
        return 2
    finally:
        if ctx is not None:
            ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
