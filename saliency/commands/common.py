"""Flags shared by several sub-commands, and the translation of registry options into flags."""

from __future__ import annotations

import argparse

from discovery.errors import UserError


def add_generator_arguments(parser: argparse.ArgumentParser, default: str | None = "horse-64") -> None:
    group = parser.add_argument_group("generator")
    group.add_argument("--generator", default=default,
                       help="registered generator name (see `saliency generators`), FILE.py:FACTORY or MODULE:FACTORY")
    group.add_argument("--weights", default=None, help="checkpoint file or folder; default: the cache or the package")
    group.add_argument(
        "--classes", default=None, help="class-conditional models: comma-separated ImageNet indices or names, or 'all'"
    )
    group.add_argument("--truncation", type=float, default=None,
                       help="BigGAN-deep: truncation in (0, 1] (default 1); StyleGAN: psi about w_avg (default 1 = none)")
    group.add_argument("--space", choices=("z", "w", "w+"), default=None,
                       help="StyleGAN: the latent space shifts are applied in (default w)")
    group.add_argument("--noise-mode", choices=("const", "random", "none"), default=None,
                       help="StyleGAN2: per-pixel noise inputs, const = the stored maps, deterministic (default const)")
    group.add_argument("--network-key", default=None,
                       help="StyleGAN: which network of the file (default G_ema for NVlabs pickles, g_ema for rosinality .pt)")
    group.add_argument("--channel-multiplier", type=int, default=None,
                       help="rosinality StyleGAN2 .pt: channel multiplier, checked against the file (default: read from it)")


GENERATOR_FLAGS = ("classes", "truncation", "space", "noise_mode", "network_key", "channel_multiplier")


def generator_options(args: argparse.Namespace) -> dict:
    """The generator keyword options a user set (kept in the directions file for later stages)."""
    return {name: getattr(args, name) for name in GENERATOR_FLAGS if getattr(args, name, None) is not None}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_registry_options(parser: argparse.ArgumentParser, groups, reserved=()) -> None:
    """One argument group per registry entry, one flag per option name (defaults: None = the entry's own).

    ``groups`` is a list of ``(entry name, description, options, defaults)``; an option that
    several entries share becomes one flag whose help lists each entry's default.
    """
    defaults_by_option: dict[str, list[tuple[str, object]]] = {}
    for name, _, options, defaults in groups:
        for option in options:
            defaults_by_option.setdefault(option.name, []).append((name, defaults.get(option.name)))
    added: set[str] = set(reserved)
    for name, description, options, defaults in groups:
        group = parser.add_argument_group(f"{name}: {description}")
        for option in options:
            if option.name in added:
                continue
            added.add(option.name)
            users = defaults_by_option[option.name]
            default = "; ".join(f"{n}: {d}" for n, d in users) if len(users) > 1 else str(users[0][1])
            text = f"{option.help} (default {default})".replace("%", "%%")
            kind = option.type or type(defaults.get(option.name))
            if kind is bool:
                group.add_argument(_flag(option.name), dest=option.name, action=argparse.BooleanOptionalAction, default=None, help=text)
            else:
                kind = kind if kind in (int, float, str) else str
                group.add_argument(_flag(option.name), dest=option.name, type=kind, choices=option.choices, default=None, help=text)


def registry_options_given(args: argparse.Namespace, options, owner: str, every_option=()) -> dict:
    """The options of ``owner`` the user set; a set flag that belongs to another entry is an error."""
    own = {option.name for option in options}
    for name in every_option:
        if name not in own and getattr(args, name, None) is not None:
            raise UserError(f"{_flag(name)}: does not apply to {owner}")
    return {name: getattr(args, name) for name in own if getattr(args, name, None) is not None}


def add_mask_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """--rule and every registered rule's options, from the mask-rule registry."""
    import dataclasses

    from discovery.registry import Option
    from saliency.masks import MASK_RULES

    parser.add_argument("--rule", choices=MASK_RULES.names(), default="lighting", help="mask rule")
    groups = []
    for name, cls in MASK_RULES.items():
        fields = [f for f in dataclasses.fields(cls)]
        options = [Option(f.name, f.metadata.get("help", f.name), _field_type(f)) for f in fields]
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        groups.append((f"{name} rule", doc, options, {f.name: f.default for f in fields}))
    add_registry_options(parser, groups)


def _field_type(field):
    if isinstance(field.default, bool):
        return bool
    if isinstance(field.default, (int, float)):
        return type(field.default)
    return float  # optional numeric fields (shift, max_border) default to None


def mask_rule_options(args: argparse.Namespace) -> dict:
    """The options of the chosen --rule that the user set; another rule's option is an error."""
    import dataclasses

    from saliency.masks import MASK_RULES

    every = {f.name for _, cls in MASK_RULES.items() for f in dataclasses.fields(cls)}
    own = {f.name for f in dataclasses.fields(MASK_RULES.get(args.rule))}
    for name in sorted(every - own):
        if getattr(args, name, None) is not None:
            raise UserError(f"{_flag(name)}: does not apply to the {args.rule} rule")
    return {name: getattr(args, name) for name in own if getattr(args, name, None) is not None}


def add_tta_argument(parser: argparse.ArgumentParser, what: str = "each photo", default: str = "none") -> None:
    """``--tta``: the Segmenter's test-time augmentation (saliency.segmenter.TTA_MODES)."""
    from saliency.segmenter import TTA_MODES

    parser.add_argument("--tta", choices=TTA_MODES, default=default,
                        help=f"test-time augmentation of {what}: flip averages the map with the mirror image's (twice the model time; default: {default})")
