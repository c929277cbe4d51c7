"""The registry of ``saliency`` sub-commands: each command module registers itself at its end.

A command is ``NAME``, one line of help, ``add_arguments(parser)`` and ``run(args)``; ``run`` only
turns flags into the keyword arguments of one library function and calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from discovery.registry import Registry


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable
    run: Callable
    description: str | None = None


COMMANDS = Registry("command")


def register_command(name: str, help: str, add_arguments: Callable, run: Callable, description: str | None = None) -> Command:
    return COMMANDS.add(name, Command(name, help, add_arguments, run, description))
