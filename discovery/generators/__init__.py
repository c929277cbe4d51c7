"""Generator adapters and the registry of named generators.

The built-in generators register themselves on import; this package imports each of them once.
"""

from discovery.generators.base import LatentGenerator, WrappedGenerator, as_latent_generator, probe_generator, wrap_generator
from discovery.generators.registry import (
    GENERATORS,
    GeneratorEntry,
    WeightsSource,
    canonical_name,
    create_generator,
    get_entry,
    list_generators,
    register_generator,
)

# Built-in generators (each module registers itself).
from discovery.generators import procedural, tiny_dcgan, horse, biggan, biggan_deep, stylegan  # noqa: E402,F401  isort: skip

__all__ = [
    "LatentGenerator",
    "WrappedGenerator",
    "wrap_generator",
    "as_latent_generator",
    "probe_generator",
    "GENERATORS",
    "GeneratorEntry",
    "WeightsSource",
    "canonical_name",
    "create_generator",
    "get_entry",
    "list_generators",
    "register_generator",
]
