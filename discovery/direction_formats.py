"""Reading the direction files users already hold, detected from the file itself.

Besides this package's ``directions.pt`` (format ``saliency.directions/1``):

* a plain vector or matrix: ``.pt`` / ``.pth`` (a saved tensor, or a dict with one tensor
  entry) or ``.npy``, shape (dim_z,), (1, dim_z) or (K, dim_z); e.g. the 120-d BigBiGAN
  background direction shipped with Voynov, Morozov & Babenko's 2021 code, or an InterFaceGAN /
  SeFa boundary. The 2021 code shifts its vector by r = 5 and the mask rules' paper shifts refer
  to a shift scale of 6, so a plain vector gets ``shift_scale`` 6: the lighting rule then moves
  z by exactly 5 x the vector, as that code does.
* a GANLatentDiscovery deformator (``deformator_*.pt``, a state dict of ``LatentDeformator``;
  its ``args.json`` beside it or one folder up names the deformator type and shift scale):
  linear / projective weights (dim_z, K) give the columns, ortho the matrix exponential of the
  skew-symmetric ``log_mat_half``. ``shift_scale`` is the training shift range (default 6).
* GANSpace components (``.npz`` with ``lat_comp`` (K, 1, dim_z) and ``lat_stdev``): unit rows,
  per-direction shift scales of 2 standard deviations (GANSpace's own slider range).

Nothing is unpickled: ``torch.load(weights_only=True)`` and ``np.load(allow_pickle=False)``.
Foreign files carry no generator name, so the caller passes ``generator`` (``--generator``).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from discovery.errors import UserError

NATIVE_FORMAT = "saliency.directions/1"
PLAIN_SHIFT_SCALE = 6.0  # the scale the mask rules' paper shifts (5 and 26) refer to


def _finite_matrix(array, path: Path, what: str) -> torch.Tensor:
    matrix = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array).detach().cpu()
    if not matrix.is_floating_point():
        raise UserError(f"--directions {path}: {what} holds {matrix.dtype} values, expected floating-point directions")
    matrix = matrix.float()
    if matrix.ndim == 1:
        matrix = matrix[None]
    if matrix.ndim == 3 and matrix.shape[1] == 1:
        matrix = matrix[:, 0]
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise UserError(f"--directions {path}: {what} has shape {tuple(matrix.shape)}, expected (dim_z,) or (K, dim_z)")
    if not torch.isfinite(matrix).all():
        raise UserError(f"--directions {path}: {what} holds NaN or infinite values")
    if bool((matrix.norm(dim=1) == 0).any()):
        raise UserError(f"--directions {path}: {what} has an all-zero direction")
    return matrix


def _require_generator(path: Path, kind: str, generator: str | None) -> str:
    if not generator:
        raise UserError(f"--directions {path}: {kind} says nothing about its generator; pass --generator NAME")
    return generator


def _find_args_json(path: Path) -> dict:
    for folder in (path.parent, path.parent.parent):
        candidate = folder / "args.json"
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise UserError(f"{candidate}: not readable JSON (the GANLatentDiscovery run arguments)") from None
            return data if isinstance(data, dict) else {}
    return {}


def _deformator_matrix(state: dict, path: Path, kind: str | None) -> tuple[torch.Tensor, str]:
    if "log_mat_half" in state:
        half = state["log_mat_half"].double()
        if half.ndim != 2 or half.shape[0] != half.shape[1]:
            raise UserError(f"--directions {path}: log_mat_half has shape {tuple(half.shape)}, expected a square matrix")
        mat = torch.linalg.matrix_exp(half - half.T)
        return mat.T.float(), "ortho"  # F.linear(e_k, mat) = column k of mat
    if "linear.weight" in state:
        weight = state["linear.weight"].float()  # (dim_z, K): nn.Linear(K, dim_z)
        matrix = weight.T.contiguous()
        kind = (kind or "linear").lower()
        if kind in ("proj", "projective"):
            matrix = matrix / matrix.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return matrix, "projective"
        return matrix, "linear"
    raise UserError(f"--directions {path}: a state dict without linear.weight or log_mat_half is not a GANLatentDiscovery deformator")


def import_directions(path: str | Path, generator: str | None = None):
    """A ``Directions`` from any supported file (see the module docstring)."""
    from discovery.checkpoints import read_torch_file
    from discovery.directions import Directions, directions_from_dict

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--directions {path}: file not found (expected directions.pt, a .npy/.pt matrix, a deformator or a GANSpace .npz)")
    suffix = path.suffix.lower()
    source = {"imported_from": str(path.resolve())}
    if suffix in (".npy", ".npz"):
        try:
            loaded = np.load(path, allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc).lower():
                raise UserError(f"--directions {path}: refused, the array holds Python objects and files are never unpickled") from None
            raise UserError(f"--directions {path}: not a readable NumPy file ({str(exc).splitlines()[0][:120]})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(f"--directions {path}: not a readable NumPy file ({type(exc).__name__})") from None
        if isinstance(loaded, np.ndarray):
            matrix = _finite_matrix(loaded, path, "the array")
            return Directions(matrix, _require_generator(path, "a plain .npy matrix", generator), "imported",
                              shift_scale=PLAIN_SHIFT_SCALE, manifest={**source, "source_format": "npy"})
        with loaded:
            if "lat_comp" not in loaded.files:
                raise UserError(f"--directions {path}: an .npz without 'lat_comp' is not a GANSpace components file "
                                f"(it has {', '.join(loaded.files) or 'nothing'})")
            matrix = _finite_matrix(loaded["lat_comp"], path, "lat_comp")
            norms = matrix.norm(dim=1)
            stdev = np.asarray(loaded["lat_stdev"], dtype=np.float64).reshape(-1) if "lat_stdev" in loaded.files else None
        stats = {"norm": norms.tolist()}
        if stdev is not None and len(stdev) == matrix.shape[0] and np.all(np.isfinite(stdev)):
            stats["shift_scales"] = (2.0 * stdev * norms.double().numpy()).tolist()
            stats["lat_stdev"] = stdev.tolist()
        matrix = matrix / norms[:, None]
        return Directions(matrix, _require_generator(path, "a GANSpace file", generator), "ganspace",
                          shift_scale=float(np.median(stats.get("shift_scales", [PLAIN_SHIFT_SCALE]))), stats=stats,
                          manifest={**source, "source_format": "ganspace-npz"})

    data = read_torch_file(path, "directions: directions.pt, a saved tensor or a deformator state dict")
    if isinstance(data, dict) and data.get("format") == NATIVE_FORMAT:
        return directions_from_dict(data, path)
    if isinstance(data, torch.Tensor):
        matrix = _finite_matrix(data, path, "the tensor")
        return Directions(matrix, _require_generator(path, "a plain tensor", generator), "imported",
                          shift_scale=PLAIN_SHIFT_SCALE, manifest={**source, "source_format": "tensor"})
    if isinstance(data, dict) and ("linear.weight" in data or "log_mat_half" in data):
        args = _find_args_json(path)
        matrix, kind = _deformator_matrix(data, path, args.get("deformator"))
        matrix = _finite_matrix(matrix, path, "the deformator")
        scale = args.get("shift_scale") or 6.0
        name = generator or None
        return Directions(matrix, _require_generator(path, "a deformator checkpoint", name), "voynov",
                          shift_scale=float(scale),
                          stats={"norm": matrix.norm(dim=1).tolist()},
                          manifest={**source, "source_format": "ganlatentdiscovery-deformator", "deformator": kind,
                                    "gan_type": args.get("gan_type")})
    if isinstance(data, dict):
        tensors = [value for value in data.values() if isinstance(value, torch.Tensor)]
        if len(tensors) == 1 and len(data) == 1:
            matrix = _finite_matrix(tensors[0], path, f"entry {next(iter(data))!r}")
            return Directions(matrix, _require_generator(path, "a plain tensor", generator), "imported",
                              shift_scale=PLAIN_SHIFT_SCALE, manifest={**source, "source_format": "tensor-dict"})
        raise UserError(f"--directions {path}: a dict with keys {sorted(map(str, data))[:6]} is not a directions file (none of the known direction formats)")
    raise UserError(f"--directions {path}: holds a {type(data).__name__}: not a directions file (none of the known direction formats)")
