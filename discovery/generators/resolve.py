"""Turning what a caller names (a generator name, an instance, a directions file's record) into a LatentGenerator."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from discovery.errors import UserError


def resolve_generator(generator, *, weights=None, generator_options: dict | None = None, device="cpu"):
    """A LatentGenerator from a registered or plugin name (built with ``weights`` and options) or an instance."""
    from discovery.generators import LatentGenerator, create_generator

    options = dict(generator_options or {})
    if isinstance(generator, str):
        return create_generator(generator, weights=weights, device=device, **options)
    if isinstance(generator, LatentGenerator):
        if weights is not None or options:
            raise UserError("weights and generator options apply to a generator given by name, not to a generator object")
        return generator.to(device) if device is not None else generator
    if isinstance(generator, nn.Module):
        raise UserError(f"a plain {type(generator).__name__} is not a generator yet: wrap it with "
                        "discovery.wrap_generator(module, latent_shape=...) so its latents and output are checked")
    raise UserError(f"generator {generator!r}: expected a registered name, FILE.py:FACTORY, MODULE:FACTORY or a LatentGenerator")


def generator_for_directions(directions, generator=None, *, weights=None, generator_options: dict | None = None, device="cpu",
                             where: str = "--directions"):
    """The generator ``directions`` belong to: the file's record, with ``generator`` / ``weights`` / options overriding it.

    Returns ``(generator, options)``; a generator whose latent size differs from the file's is a UserError.
    """
    from discovery.generators import LatentGenerator
    from discovery.generators.registry import canonical_name

    recorded = dict(directions.generator_options or {})
    options = {k: v for k, v in recorded.items() if k != "weights"}
    options.update(generator_options or {})
    if isinstance(generator, LatentGenerator):
        made = resolve_generator(generator, device=device)
        name = getattr(made, "name", "custom")
    else:
        name = generator or directions.generator
        if generator and not directions.manifest.get("imported_from") and canonical_name(generator) != directions.generator:
            raise UserError(f"--generator {generator}: {where} holds directions of {directions.generator!r}")
        if weights is None and recorded.get("weights") and Path(recorded["weights"]).exists():
            weights = recorded["weights"]
        made = resolve_generator(name, weights=weights, generator_options=options, device=device)
    if made.dim_z != directions.dim_z:
        raise UserError(f"{where}: dim_z {directions.dim_z} does not match generator {name!r} (dim_z {made.dim_z})")
    return made, options
