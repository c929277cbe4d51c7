"""A name -> entry table, the one mechanism behind every extension point of the package.

Generators, discovery methods, mask rules and sub-commands each have one ``Registry``. The
registry is a leaf: it imports nothing of the package. Each entry registers itself where it is
defined (a decorator or a call at the bottom of its module), and the package that owns the
entries imports its modules once, so adding an entry is one new module plus one import line.
An unknown name is a one-line ``UserError`` naming the option and the known names.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from discovery.errors import UserError


def explicit_keywords(function: Callable) -> set[str] | None:
    """The keyword parameters a callable names, or None when it takes any (``**kwargs``) or cannot be inspected."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


@dataclass(frozen=True)
class Option:
    """One keyword option of a registered entry, as the command line shows it (the default comes from the entry)."""

    name: str  # keyword parameter / field name; the flag is --name-with-dashes
    help: str  # one line for --help
    type: Any = None  # int, float, str, bool (--x / --no-x); None: the default's type, else str
    choices: tuple | None = None


class Registry:
    """Entries by name, in registration order; ``loader`` (if any) runs once before the first look-up."""

    def __init__(self, kind: str, option: str | None = None, loader: Callable[["Registry"], None] | None = None):
        self.kind = kind  # what an entry is, for messages: "generator", "discovery method"
        self.option = option  # the command-line flag that names an entry, for messages: "--generator"
        self._entries: dict[str, Any] = {}
        self._loader = loader
        self._loaded = loader is None

    def add(self, name: str, entry: Any) -> Any:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable:
        """Decorator: ``@REGISTRY.register("name")`` stores the decorated object under ``name``."""

        def decorate(obj):
            self.add(name, obj)
            return obj

        return decorate

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True  # first, so a loader that registers through this registry does not recurse
            self._loader(self)

    def get(self, name: str) -> Any:
        self._ensure_loaded()
        if name not in self._entries:
            flag = f"{self.option} " if self.option else ""
            raise UserError(f"{flag}{name!r}: unknown {self.kind} (known: {', '.join(self.names())})")
        return self._entries[name]

    def names(self) -> list[str]:
        self._ensure_loaded()
        return list(self._entries)

    def items(self) -> Iterator[tuple[str, Any]]:
        self._ensure_loaded()
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def remove(self, name: str) -> None:
        """Forget an entry (tests that register throw-away entries)."""
        self._entries.pop(name, None)
