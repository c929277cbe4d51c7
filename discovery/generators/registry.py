"""Named generators, in the spirit of timm's ``create_model``.

A builder is registered with its checkpoint source (file name, URL, checksum); the model
code never knows where weights come from. ``create_generator(name, weights=...)`` resolves
the weights (user path, cache, or download) and returns an eval-mode LatentGenerator.

Besides the registered names, ``name`` may be a plugin:

* ``path/to/file.py:factory`` or ``package.module:factory``: ``factory(weights=..., **options)``
  returns an ``nn.Module`` or a ``LatentGenerator`` (a plain module is wrapped and probed by
  ``wrap_generator``, so it must say its latent size with a ``latent_shape``, ``dim_z``,
  ``z_dim`` or ``nz`` attribute);
* an entry point of an installed package in the group ``saliency.generators``, pointing at such
  a factory (or at a module that registers generators with ``register_generator`` on import).

The built-in generators register themselves when ``discovery.generators`` imports their modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from discovery.errors import UserError
from discovery.registry import Registry, explicit_keywords

ENTRY_POINT_GROUP = "saliency.generators"


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
    plugin: str | None = None  # where a plugin came from ("entry point <dist>", a file), None for built-ins
    takes_weights: bool | None = None  # None: decided from the builder's signature


def _load_entry_points(registry: Registry) -> None:
    """Register the generators of installed plugins (entry-point group ``saliency.generators``)."""
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in registry._entries:
            continue
        try:
            target = point.load()
        except Exception as exc:  # a broken plugin must not take the whole command line down
            from discovery.runtime import get_logger

            get_logger("generators").warning(f"generator plugin {point.name!r} ({point.value}) failed to load: {type(exc).__name__}: {exc}")
            continue
        if callable(target) and not inspect.ismodule(target) and point.name not in registry._entries:
            dist = getattr(point, "dist", None)
            where = f"entry point {point.value}" + (f" of {dist.name}" if dist is not None else "")
            registry.add(point.name, _plugin_entry(point.name, target, where))


GENERATORS = Registry("generator", "--generator", loader=_load_entry_points)


def register_generator(name: str, description: str = "", weights: WeightsSource | None = None, takes_weights: bool | None = None,
                       **defaults):
    """Decorator registering ``builder(weights_path, **kwargs)`` under ``name``.

    ``takes_weights`` (default: whether a ``weights`` source is given) says whether ``--weights``
    means anything to it; a generator that takes none refuses them instead of ignoring them."""

    def decorate(builder: Callable) -> Callable:
        GENERATORS.add(name, GeneratorEntry(name, builder, description, weights, dict(defaults), takes_weights=takes_weights))
        return builder

    return decorate


def _accepts(function: Callable, keyword: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in parameters)


def _plugin_entry(name: str, factory: Callable, where: str) -> GeneratorEntry:
    def build(weights=None, **options):
        from discovery.generators.base import as_latent_generator

        kwargs = dict(options)
        if weights is not None:
            kwargs["weights"] = str(weights)
        try:
            made = factory(**kwargs)
        except UserError:
            raise
        except TypeError as exc:
            raise UserError(f"--generator {name}: the factory refused its options {sorted(kwargs)} ({exc})") from None
        return as_latent_generator(made, name=name)

    description = (inspect.getdoc(factory) or "").split("\n")[0] or f"plugin ({where})"
    return GeneratorEntry(name, build, description, None, {}, plugin=where, takes_weights=_accepts(factory, "weights"))


def _load_factory(spec: str) -> Callable:
    """``file.py:factory`` or ``package.module:factory`` -> the factory (importing the user's code, on purpose)."""
    target, _, attribute = spec.rpartition(":")
    if not target or not attribute.isidentifier():
        raise UserError(f"--generator {spec!r}: expected a registered name, FILE.py:FACTORY or MODULE:FACTORY")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise UserError(f"--generator {spec}: file {path} not found")
        module_name = f"saliency_plugin_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise UserError(f"--generator {spec}: {path} is not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise UserError(f"--generator {spec}: importing {path} failed ({type(exc).__name__}: {exc})") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UserError(f"--generator {spec}: cannot import module {target!r} ({exc})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise UserError(f"--generator {spec}: {target} has no callable {attribute!r}")
    return factory


def canonical_name(name: str) -> str:
    """The name under which a generator is recorded in files: file plugins get an absolute path."""
    target, sep, attribute = name.rpartition(":")
    if sep and (target.endswith(".py") or "/" in target) and Path(target).expanduser().is_file():
        return f"{Path(target).expanduser().resolve()}:{attribute}"
    return name


def list_generators() -> list[str]:
    return sorted(GENERATORS.names())


def get_entry(name: str) -> GeneratorEntry:
    if name in GENERATORS or ":" not in str(name):
        return GENERATORS.get(name)
    name = canonical_name(name)
    if name not in GENERATORS:
        GENERATORS.add(name, _plugin_entry(name, _load_factory(name), name.rpartition(":")[0]))
    return GENERATORS.get(name)


def create_generator(name: str, weights: str | Path | None = None, device="cpu", **kwargs):
    """Build a registered (or plugin) generator, load its weights, and return it in eval mode on ``device``."""
    from discovery.weights import resolve_weights

    entry = get_entry(name)
    takes_weights = entry.takes_weights if entry.takes_weights is not None else (entry.weights is not None)
    if weights is not None and not takes_weights:
        raise UserError(f"--weights {weights}: generator {entry.name!r} takes no weights")
    options = {**entry.defaults, **{k: v for k, v in kwargs.items() if v is not None}}
    accepted = explicit_keywords(entry.builder)
    if accepted is not None:
        refused = [k for k in options if k not in accepted]
        if refused:
            takes = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(accepted - {"weights"})) or "no options"
            raise UserError(f"--{refused[0].replace('_', '-')} does not apply to generator {entry.name!r} (it takes {takes})")
    path = resolve_weights(entry, weights)
    generator = entry.builder(path, **options)
    generator.name = entry.name
    generator.weights_path = str(path) if path is not None else None
    return generator.eval().requires_grad_(False).to(device)
