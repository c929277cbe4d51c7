"""Generator adapters and the registry of named generators."""

from discovery.generators.base import LatentGenerator, WrappedGenerator, wrap_generator
from discovery.generators.registry import (
    GeneratorEntry,
    WeightsSource,
    create_generator,
    get_entry,
    list_generators,
    register_generator,
)

__all__ = [
    "LatentGenerator",
    "WrappedGenerator",
    "wrap_generator",
    "GeneratorEntry",
    "WeightsSource",
    "create_generator",
    "get_entry",
    "list_generators",
    "register_generator",
]
