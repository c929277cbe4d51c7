"""Unsupervised discovery of interpretable directions in GAN latent spaces.

``discovery.discover(generator, method=..., out=..., **options)`` is the stage; generators
(``register_generator``) and methods (``discovery.methods.register_method``) are registries that
their modules register into when this package imports them.
"""

from discovery.errors import UserError
from discovery.generators import create_generator, list_generators, register_generator, wrap_generator
from discovery.directions import Directions, load_directions

# Built-in discovery methods (each module registers its method on import).
from discovery import voynov, hessian, closed_form, optimized_direction  # noqa: E402,F401  isort: skip
from discovery.methods import METHODS, register_method  # noqa: E402
from discovery.run_discovery import discover  # noqa: E402

__all__ = [
    "UserError",
    "create_generator",
    "list_generators",
    "register_generator",
    "wrap_generator",
    "Directions",
    "load_directions",
    "METHODS",
    "register_method",
    "discover",
]
__version__ = "0.1.0"
