"""Named generators, in the spirit of timm's ``create_model``.

A builder is registered with its checkpoint source (file name, URL, checksum); the model
code never knows where weights come from. ``create_generator(name, weights=...)`` resolves
the weights (user path, cache, or download) and returns an eval-mode LatentGenerator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from discovery.errors import UserError


@dataclass
class WeightsSource:
    """Where the weights of a registered generator come from."""

    filename: str  # file (or folder) name a user places under the cache directory
    url: str | None = None  # official download address; None when weights ship with the package
    sha256: str | None = None  # checksum of the downloaded file
    files: tuple[str, ...] = ()  # for folder checkpoints: the files inside (e.g. config.json, pytorch_model.bin)
    embedded: str | None = None  # path inside the package for weights that ship with it
    note: str = ""  # how to obtain the weights by hand


@dataclass
class GeneratorEntry:
    name: str
    builder: Callable  # builder(weights_path: Path | None, **kwargs) -> LatentGenerator
    description: str = ""
    weights: WeightsSource | None = None  # None: needs no weights (procedural or seeded)
    defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, GeneratorEntry] = {}


def register_generator(name: str, description: str = "", weights: WeightsSource | None = None, **defaults):
    """Decorator registering ``builder(weights_path, **kwargs)`` under ``name``."""

    def decorate(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"generator {name!r} is registered twice")
        _REGISTRY[name] = GeneratorEntry(name, builder, description, weights, dict(defaults))
        return builder

    return decorate


def _load_builtin_generators() -> None:
    # Importing the modules runs their @register_generator decorators.
    import discovery.generators.procedural  # noqa: F401
    import discovery.generators.tiny_dcgan  # noqa: F401

    for optional in ("discovery.generators.biggan", "discovery.generators.biggan_deep", "discovery.generators.horse"):
        try:
            __import__(optional)
        except ModuleNotFoundError as exc:
            if exc.name != optional:
                raise


def list_generators() -> list[str]:
    _load_builtin_generators()
    return sorted(_REGISTRY)


def get_entry(name: str) -> GeneratorEntry:
    _load_builtin_generators()
    if name not in _REGISTRY:
        raise UserError(f"--generator {name!r}: unknown generator (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def create_generator(name: str, weights: str | Path | None = None, device="cpu", **kwargs):
    """Build a registered generator, load its weights, and return it in eval mode on ``device``."""
    from discovery.weights import resolve_weights

    entry = get_entry(name)
    options = {**entry.defaults, **{k: v for k, v in kwargs.items() if v is not None}}
    path = resolve_weights(entry, weights)
    generator = entry.builder(path, **options)
    generator.name = name
    generator.weights_path = str(path) if path is not None else None
    return generator.eval().requires_grad_(False).to(device)
