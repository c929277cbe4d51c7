"""Atomic file writes and the small manifests every artefact carries."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()  # what open() would give: colleagues on a shared server can read a run


def fsync_folder(folder: str | Path) -> None:
    """Flush a folder's entries (a rename into it, a new file) to the disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows, where a folder has no file descriptor
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the file data itself is already flushed
    finally:
        os.close(fd)


def fsync_files(paths) -> None:
    """Flush files written earlier (without fsync) to the disk, then their folders."""
    folders = set()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        folders.add(Path(path).parent)
    for folder in sorted(folders):
        fsync_folder(folder)


def _atomic_replace(path: Path, write, durable: bool = True) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file.

    ``durable`` also flushes the file to the disk before the rename and the folder after it, so
    the new file survives a power loss; a killed process never leaves half a file either way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600 files whatever the umask
        os.replace(tmp, path)
        if durable:
            fsync_folder(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    _atomic_replace(Path(path), lambda handle: torch.save(obj, handle))


def atomic_write_bytes(data: bytes, path: str | Path, durable: bool = True) -> None:
    _atomic_replace(Path(path), lambda handle: handle.write(data), durable)


def atomic_write_text(text: str, path: str | Path, durable: bool = True) -> None:
    atomic_write_bytes(text.encode("utf-8"), path, durable)


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n", path)


def read_json(path: str | Path) -> Any:
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def run_manifest(**extra: Any) -> dict:
    """How an artefact was made: command line, versions, machine and time, plus the caller's fields."""
    manifest = {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "machine": platform.node(),
        "platform": platform.platform(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        from importlib.metadata import version

        manifest["saliency"] = version("saliency")
    except Exception:  # not installed as a distribution (running from a source tree)
        manifest["saliency"] = None
    manifest.update(extra)
    return manifest


def ensure_fresh_output(out: Path, resume: bool, marker: str) -> None:
    """Refuse to mix a new run into a folder that already holds another run's results.

    ``marker`` is the file a finished or interrupted run leaves (e.g. a checkpoint); with
    ``--resume`` its presence is expected, without it its presence is an error.
    """
    from discovery.errors import UserError

    out = Path(out)
    if (out / marker).exists() and not resume:
        raise UserError(f"--out {out}: already holds a run ({marker}); pass --resume to continue it or choose another folder")
    check_writable(out)
    if resume and out.is_dir():
        remove_stale_temporaries(out)


def check_writable(out: Path) -> None:
    """``out`` is a folder this process can write (made if missing): checked before any work, one line if not."""
    from discovery.errors import UserError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    if created:  # made for the check only: the stage makes it again when it writes, so a failed start leaves nothing
        try:
            out.rmdir()
        except OSError:
            pass


def remove_stale_temporaries(folder: Path, names=None, recursive: bool = True) -> int:
    """Delete the temporary files of writes a killed run left (``.<name>.<random>.tmp``, up to a checkpoint's size each).

    ``names``: only the temporaries of these file names (a folder that also holds other people's files)."""
    removed = 0
    for stale in (Path(folder).rglob if recursive else Path(folder).glob)(".*.tmp"):
        target = stale.name[1:].rsplit(".", 2)[0]  # ".<name>.<random>.tmp" -> "<name>"
        if stale.is_file() and (names is None or target in names):
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


def leaves_nothing_on_bad_input(out_argument: str, marker):
    """Decorator of a stage function: a run that fails on bad input (``UserError``) before it wrote
    ``marker`` (its first checkpoint; or ``marker(out)`` says whether the run got that far) into a
    folder it created removes that folder again, so the corrected command needs no --resume and
    finds no stray logs."""
    import functools
    import inspect
    import shutil

    from discovery.errors import UserError

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                out = signature.bind_partial(*args, **kwargs).arguments.get(out_argument)
            except TypeError:
                out = None
            fresh = out is not None and not Path(out).exists()
            try:
                return function(*args, **kwargs)
            except UserError:
                started = marker(Path(out)) if callable(marker) else (Path(out) / marker).exists()
                if fresh and Path(out).is_dir() and not started:
                    shutil.rmtree(out, ignore_errors=True)
                raise

        return wrapper

    return decorate
