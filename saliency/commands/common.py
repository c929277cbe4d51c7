"""Options shared by several sub-commands."""

from __future__ import annotations

import argparse

from discovery.errors import UserError


def add_generator_arguments(parser: argparse.ArgumentParser, default: str | None = "horse-64") -> None:
    group = parser.add_argument_group("generator")
    group.add_argument("--generator", default=default, help="registered generator name (see `saliency generators`)")
    group.add_argument("--weights", default=None, help="checkpoint file or folder; default: the cache or the package")
    group.add_argument(
        "--classes", default=None, help="class-conditional models: comma-separated ImageNet indices or names, or 'all'"
    )
    group.add_argument("--truncation", type=float, default=None, help="BigGAN-deep truncation in (0, 1]")


def generator_options(args: argparse.Namespace) -> dict:
    """The generator keyword options a user set (kept in the directions file for later stages)."""
    options = {}
    if getattr(args, "classes", None) is not None:
        options["classes"] = args.classes
    if getattr(args, "truncation", None) is not None:
        if not 0 < args.truncation <= 1:
            raise UserError(f"--truncation {args.truncation}: must be in (0, 1]")
        options["truncation"] = args.truncation
    return options


def build_generator(args: argparse.Namespace, device, name: str | None = None, weights=None, options: dict | None = None):
    from discovery.generators import create_generator

    name = name or args.generator
    if name is None:
        raise UserError("--generator is required")
    return create_generator(name, weights=weights if weights is not None else args.weights, device=device, **(options if options is not None else generator_options(args)))
