"""Reading checkpoint files with errors a user can act on."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from discovery.errors import UserError


def read_torch_file(path: str | Path, expected: str = "a PyTorch file", allowed_globals: tuple = ()):
    """``torch.load`` with ``weights_only=True`` on the CPU: tensors and plain containers only.

    A file that would need arbitrary Python objects (a pickled class, a ``__reduce__`` payload)
    is refused before any of its code runs; every failure is a one-line UserError.
    ``allowed_globals`` names the few harmless classes a known format carries (rosinality's
    training checkpoints hold an ``argparse.Namespace``).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected {expected})")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not the user's concern
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # the file names a Python callable or class: code, not weights
            raise UserError(f"{path}: refused, it holds Python objects other than tensors and plain containers, "
                            f"and files are never unpickled (expected {expected})") from None
        raise UserError(f"{path}: not a readable PyTorch file, truncated or corrupt (expected {expected})") from None
    except (zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError, IndexError, KeyError, TypeError, AttributeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable checkpoint, truncated or corrupt (expected {expected}; {first_line[:200]})") from None


def read_checkpoint(path: str | Path, expected: str = "a PyTorch checkpoint", allowed_globals: tuple = ()) -> dict:
    """``read_torch_file`` for files that must hold a dict (state dicts, run checkpoints)."""
    obj = read_torch_file(path, expected, allowed_globals)
    if not isinstance(obj, dict):
        raise UserError(f"{path}: holds a {type(obj).__name__}, expected {expected} (a dict)")
    return obj


def describe_key_mismatch(
    missing: Iterable[str], unexpected: Iterable[str], misshaped: Iterable[tuple[str, tuple, tuple]], limit: int = 3
) -> str:
    parts = []
    missing, unexpected, misshaped = list(missing), list(unexpected), list(misshaped)
    if missing:
        parts.append(f"{len(missing)} missing ({', '.join(missing[:limit])}{', ...' if len(missing) > limit else ''})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:limit])}{', ...' if len(unexpected) > limit else ''})")
    if misshaped:
        shown = ", ".join(f"{k} {tuple(got)} vs {tuple(want)}" for k, got, want in misshaped[:limit])
        parts.append(f"{len(misshaped)} mis-shaped ({shown}{', ...' if len(misshaped) > limit else ''})")
    return "; ".join(parts)


def load_state_dict_strict(
    module: nn.Module,
    source: str | Path | dict,
    expected: str = "a state dict of this architecture",
    optional_keys: Iterable[str] = (),
    key: str | None = None,
) -> nn.Module:
    """Load a state dict exactly: every key present, none extra, every shape equal.

    ``optional_keys`` may be absent from the file (e.g. spectral-norm ``weight_v`` vectors that
    some published conversions drop); they keep the module's own values.
    """
    name = str(source) if not isinstance(source, dict) else "state dict"
    state = read_checkpoint(source, expected) if not isinstance(source, dict) else source
    if key is not None:
        if key not in state:
            raise UserError(f"{name}: has no {key!r} entry (expected {expected})")
        state = state[key]
    own = module.state_dict()
    optional = set(optional_keys)
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    misshaped = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or misshaped:
        raise UserError(f"{name}: does not match {expected}: {describe_key_mismatch(missing, unexpected, misshaped)}")
    module.load_state_dict({**own, **state}, strict=True)
    return module
