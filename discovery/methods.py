"""The registry of discovery methods behind ``saliency discover --method`` and ``discovery.discover``.

A method is a function ``run(generator, out_dir, **options) -> Directions`` (or ``(Directions,
summary dict)``), registered with ``@register_method(name, ...)`` in the module that implements
it. Its keyword parameters, with their defaults, are its whole configuration; ``MethodOption``
entries add the one-line help and type the command line needs, so ``--method`` choices, each
method's option group and ``--help`` all come from here. Parameters every method receives from
``discovery.discover`` (``seed``, ``device``, ``progress``, ``resume``, ``generator_options``) are
not options.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from discovery.errors import UserError
from discovery.registry import Option, Registry

STANDARD_PARAMETERS = ("generator", "out_dir", "seed", "device", "progress", "resume", "generator_options")


MethodOption = Option  # one option of a method: name, help, type, choices

# The closed-form and Hessian methods let a user override the shift scale they derive themselves.
SHIFT_SCALE_OPTION = MethodOption("shift_scale", "chart and mask-rule shift scale (None: the method's own)", float)


def override_shift_scale(directions, shift_scale: float | None):
    """``directions`` with ``shift_scale`` when one is given (``SHIFT_SCALE_OPTION``), else as found."""
    if shift_scale is not None:
        directions.shift_scale = float(shift_scale)
    return directions


@dataclass
class DiscoveryMethod:
    name: str
    run: Callable
    description: str
    options: tuple[MethodOption, ...] = ()
    resumable: bool = False  # long enough to checkpoint and resume (``--resume``)
    marker: str = "directions.pt"  # the file an interrupted or finished run leaves in out_dir
    defaults: dict = field(default_factory=dict)  # from the run function's signature

    def check_options(self, options: dict) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise UserError(f"method {self.name!r}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(self.defaults))})")


METHODS = Registry("discovery method", "--method")


def register_method(name: str, *, description: str, options: tuple[MethodOption, ...] = (), resumable: bool = False,
                    marker: str = "directions.pt") -> Callable:
    """Decorator for a method's ``run(generator, out_dir, **options)``."""

    def decorate(run: Callable) -> Callable:
        parameters = inspect.signature(run).parameters
        defaults = {key: p.default for key, p in parameters.items()
                    if key not in STANDARD_PARAMETERS and p.kind is p.KEYWORD_ONLY}
        for option in options:
            if option.name not in defaults:
                raise ValueError(f"method {name!r}: option {option.name!r} is not a keyword-only parameter of {run.__name__}")
        METHODS.add(name, DiscoveryMethod(name, run, description, tuple(options), resumable, marker, defaults))
        return run

    return decorate


def get_method(name: str) -> DiscoveryMethod:
    return METHODS.get(name)
