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


def shift_sign(value: str):
    """argparse type for --sign: 1, -1 or auto."""
    if value == "auto":
        return value
    try:
        sign = int(value)
    except ValueError:
        sign = 0
    if sign not in (1, -1):
        raise argparse.ArgumentTypeError(f"{value!r}: expected 1, -1 or auto")
    return sign


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


def generator_for_directions(args: argparse.Namespace, directions, device):
    """The generator a directions file was made with, honouring --generator/--weights/--classes overrides.

    The file records the generator's name and options (and the weights path when one was
    given); an explicit --generator that names another generator, or a generator whose latent
    size differs from the file's, is a user error.
    """
    from pathlib import Path

    name = args.generator or directions.generator
    if args.generator and args.generator != directions.generator:
        raise UserError(f"--generator {args.generator}: {args.directions} holds directions of {directions.generator!r}")
    options = {k: v for k, v in (directions.generator_options or {}).items() if k != "weights"}
    options.update(generator_options(args))
    weights = args.weights
    recorded = (directions.generator_options or {}).get("weights")
    if weights is None and recorded and Path(recorded).exists():
        weights = recorded
    generator = build_generator(args, device, name=name, weights=weights, options=options)
    if generator.dim_z != directions.dim_z:
        raise UserError(f"--directions {args.directions}: dim_z {directions.dim_z} does not match generator {name!r} (dim_z {generator.dim_z})")
    return generator, options


def background_direction_choice(args: argparse.Namespace, generator, directions, rule, device) -> tuple[int, int, dict]:
    """(index, sign, provenance) for --index I|auto and --sign 1|-1|auto, shared by synthesize and train-segmenter."""
    from saliency.synthesis import background_sign_of, choose_sign, resolve_background_index, rule_sign

    provenance: dict = {}
    if args.index == "auto":
        index, dimming_sign, source = resolve_background_index(generator, directions, args.directions, seed=args.seed)
        provenance["index_choice"] = {"source": source, "index": index, "background_dimming_sign": dimming_sign}
    else:
        try:
            index = int(args.index)
        except ValueError:
            raise UserError(f"--index {args.index!r}: expected a direction number or 'auto'") from None
        directions.direction(index)  # range check, one-line error
        dimming_sign = background_sign_of(directions, index)
    sign = args.sign
    if sign == "auto":
        prefer = rule_sign(rule, dimming_sign) if dimming_sign else 1
        sign, probe = choose_sign(generator, directions, index, rule, seed=args.seed, device=device, prefer=prefer)
        provenance["sign_choice"] = {"rule": rule.name, "preferred": prefer, "probe": probe, "sign": sign}
    return index, int(sign), provenance


def add_mask_rule_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """The mask-rule options, identical for synthesize and on-the-fly train-segmenter."""
    rules = parser.add_argument_group(title)
    rules.add_argument("--rule", choices=("intensity", "lighting"), default="lighting", help="mask rule")
    rules.add_argument("--shift", type=float, default=None, help="latent shift (default: the rule's, scaled by the file's shift_scale / 6)")
    rules.add_argument("--threshold", type=float, default=None, help="intensity: luma under which the shifted image is foreground (0.95)")
    rules.add_argument("--min-area", type=float, default=None, help="reject masks covering this fraction or less (intensity 0.05, lighting 0)")
    rules.add_argument("--max-area", type=float, default=None, help="reject masks covering this fraction or more (0.5)")
    rules.add_argument("--component-ratio", type=float, default=None, help="lighting: keep components above this fraction of the largest (0.2)")
    rules.add_argument("--bimodality", type=int, default=None, help="lighting: least histogram peaks of the shifted image (2; 0 disables)")
    rules.add_argument("--max-border", type=float, default=None,
                       help="not in the papers: reject masks covering more than this fraction of the image border (default: off)")
    rules.add_argument("--smooth", type=int, default=None,
                       help="not in the papers: majority vote of each mask pixel over an odd SMOOTH x SMOOTH window, "
                            "removing speckle (default: 0, off)")


def mask_rule_from_args(args: argparse.Namespace):
    from saliency.masks import build_rule

    return build_rule(args.rule, shift=args.shift, threshold=args.threshold, min_area=args.min_area,
                      max_area=args.max_area, component_ratio=args.component_ratio, bimodality=args.bimodality,
                      max_border=args.max_border, smooth=args.smooth)
