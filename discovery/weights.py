"""Locate generator weights: a user path, the cache, the package, or a one-time download."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from discovery.errors import UserError


def cache_dir() -> Path:
    """``$SALIENCY_CACHE``, else ``$XDG_CACHE_HOME/saliency``, else ``~/.cache/saliency``."""
    if os.environ.get("SALIENCY_CACHE"):
        return Path(os.environ["SALIENCY_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "saliency"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: Path, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``destination`` with a progress bar, verify, then move into place.

    A plain-http address is tried over https first (the same path); only when that fails is the
    http address used, with a warning that names the file's sha256 when no checksum guards it."""
    from tqdm import tqdm

    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    attempts = ["https://" + url[len("http://"):], url] if url.startswith("http://") else [url]
    for attempt, address in enumerate(attempts):
        try:
            with urllib.request.urlopen(address, timeout=timeout) as response, open(partial, "wb") as handle:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {destination.name}") as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        handle.write(block)
                        bar.update(len(block))
            break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            partial.unlink(missing_ok=True)
            if attempt == len(attempts) - 1:
                raise ConnectionError(str(exc)) from exc
    if address.startswith("http://") and not sha256:
        from discovery.runtime import get_logger

        get_logger("download").warning(f"{destination.name} came over plain http ({address}) with no published checksum; "
                                       f"its sha256 is {sha256_of(partial)}: compare it with a trusted copy")
    if sha256 and sha256_of(partial) != sha256:
        partial.unlink(missing_ok=True)
        raise UserError(f"{url}: downloaded file does not match its sha256 {sha256}; try again or download it by hand to {destination}")
    os.replace(partial, destination)
    return destination


def resolve_weights(entry, weights: str | Path | None) -> Path | None:
    """Return the weights path for a registry entry, or None for generators without weights."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.exists():
            raise UserError(f"--weights {path}: no such file or folder")
        return path
    source = entry.weights
    if source is None:
        return None
    if source.embedded:
        path = Path(__file__).resolve().parent / source.embedded
        if not path.exists():
            raise UserError(f"{path}: the embedded weights of {entry.name!r} are missing from this installation; reinstall the package")
        if source.sha256 and sha256_of(path) != source.sha256:
            raise UserError(f"{path}: the embedded weights of {entry.name!r} do not match their sha256 {source.sha256} "
                            "(modified or damaged installation); reinstall the package")
        return path
    target = cache_dir() / entry.name / source.filename
    wanted = [target / f for f in source.files] if source.files else [target]
    if all(p.exists() for p in wanted):
        return target
    hint = f"put {' and '.join(str(p) for p in wanted)} there, or pass --weights PATH"
    if source.note:
        hint += f" ({source.note})"
    if not source.url:
        raise UserError(f"{entry.name}: weights not found at {target}; {hint}")
    urls = [source.url] if not source.files else [_file_url(source.url, f) for f in source.files]
    for url, path in zip(urls, wanted):
        if path.exists():
            continue
        try:
            download(url, path, source.sha256 if not source.files else None)
        except ConnectionError as exc:
            raise UserError(f"{entry.name}: weights not found at {target} and the download from {url} failed ({exc}); {hint}") from None
    return target


def _file_url(url: str, filename: str) -> str:
    """URL of one file of a folder checkpoint: ``url`` with ``{file}`` filled in, else ``url/filename``."""
    if "{file}" in url:
        return url.replace("{file}", filename)
    return url.rstrip("/") + "/" + filename
