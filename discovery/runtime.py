"""Device choice, seeding and mixed precision: the few run-time decisions every job makes."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from discovery.errors import UserError


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA when present; an explicit device that is not available is a user error."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name!r}: not a device name (expected auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def pin_cuda_device(device: torch.device, local_rank: int | None = None) -> torch.device:
    """Make ``device`` the current CUDA device and return it with an explicit index.

    ``torch.cuda.set_device`` rejects a bare ``cuda`` (no index), which is what ``--device cuda``
    and ``--device auto`` resolve to; under torchrun the process's ``local_rank`` is the index,
    otherwise the device CUDA already has current. CPU devices come back unchanged.
    """
    if device.type != "cuda":
        return device
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device() if local_rank is None else local_rank)
    torch.cuda.set_device(device)
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU torch.Generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device, enabled: bool = True, dtype: torch.dtype | None = None):
    """bf16/fp16 autocast on CUDA; a no-op on CPU, where fp32 is both faster and exact."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def rng_state() -> dict:
    """Everything needed to continue a random stream bit-for-bit after a resume."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
