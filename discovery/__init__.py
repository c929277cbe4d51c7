"""Unsupervised discovery of interpretable directions in GAN latent spaces."""

from discovery.errors import UserError
from discovery.generators import create_generator, list_generators, register_generator, wrap_generator
from discovery.directions import Directions, load_directions

__all__ = [
    "UserError",
    "create_generator",
    "list_generators",
    "register_generator",
    "wrap_generator",
    "Directions",
    "load_directions",
]
__version__ = "0.1.0"
