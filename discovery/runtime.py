"""What every loop of the package shares: device choice, seeding and random state, mixed precision,
the torchrun rank context, the resume check, logging and progress bars."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from dataclasses import dataclass

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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) (0..{torch.cuda.device_count() - 1})")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--device {name}: Apple's MPS is not available on this machine (use --device cpu)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: not a device the package runs on (expected auto, cpu, cuda or cuda:N)")
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
    """Every random stream (Python, NumPy, torch, CUDA) in types ``torch.load(weights_only=True)``
    reads back (tensors, ints, floats, strings), so a resume continues bit-for-bit."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "python": [int(version), torch.tensor(list(internal), dtype=torch.int64), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    internal = internal.tolist() if isinstance(internal, torch.Tensor) else internal
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), int(position), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- processes
@dataclass
class RankContext:
    """Where this process stands under torchrun; built once by the launcher and passed to every stage."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False  # torch.distributed initialised, for collectives
    owned: bool = False  # initialised by this context (``close`` tears it down)

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (``[obj]`` without torch.distributed)."""
        if not self.distributed:
            return [obj]
        gathered = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def mean(self, value: float, device) -> float:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], device=device, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.item() / self.world_size

    def close(self) -> None:
        if self.owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.distributed = self.owned = False


def rank_context(rank: int | None = None, world_size: int | None = None) -> RankContext:
    """RANK / WORLD_SIZE / LOCAL_RANK from torchrun's environment unless given; the process group is
    initialised only when W > 1 and torchrun set MASTER_ADDR (explicit ranks are for tests and manual launches)."""
    world = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
    rank_value = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
    local = int(os.environ.get("LOCAL_RANK", str(rank_value)))
    if world < 1 or not 0 <= rank_value < world:
        raise UserError(f"rank {rank_value} of world size {world}: not a valid torchrun layout")
    distributed = owned = False
    if world > 1 and rank is None and world_size is None and "MASTER_ADDR" in os.environ:
        import torch.distributed as dist

        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(local)
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
            owned = True
        distributed = True
    return RankContext(rank_value, world, local, distributed, owned)


def rank_device(name, ctx: RankContext) -> torch.device:
    """``--device`` for this process: under torchrun a bare cuda/auto becomes cuda:LOCAL_RANK."""
    device = resolve_device(name) if not isinstance(name, torch.device) else name
    if device.type == "cuda":
        device = pin_cuda_device(device, ctx.local_rank if ctx.world_size > 1 else None)
    return device


# ----------------------------------------------------------------------------- resume
def settings_differences(saved: dict, current: dict, keys=None, path: str = "") -> list[str]:
    """Every setting that differs between a run's stored settings and this call's, as ``key: then -> now``."""
    differences = []
    names = keys if keys is not None else sorted(set(saved) | set(current))
    for key in names:
        a, b = saved.get(key), current.get(key)
        where = f"{path}.{key}" if path else str(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += settings_differences(a, b, path=where)
        elif _normal(a) != _normal(b):
            differences.append(f"{where}: {a!r} then, {b!r} now")
    return differences


def _normal(value):
    if isinstance(value, tuple):
        return [_normal(v) for v in value]
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def check_resume(saved: dict, current: dict, where, keys=None) -> None:
    """Refuse to resume a run with other settings; one line listing every difference."""
    differences = settings_differences(saved or {}, current, keys)
    if differences:
        raise UserError(f"--resume {where}: the run was made with other settings ({'; '.join(differences)}); "
                        "rerun with the original settings or choose another --out")


# ----------------------------------------------------------------------------- logging and progress
LOGGER_NAME = "saliency"


def get_logger(name: str | None = None) -> logging.Logger:
    """The package's logger (``saliency.<name>``); ``configure_logging`` makes it print like the CLI."""
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")


class _CurrentStreamHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is at the time (redirections and test captures included)."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    @property
    def stream(self):
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value):  # logging.StreamHandler.__init__ assigns one; the live stream is used instead
        pass


def configure_logging(verbose: bool = True) -> None:
    """Messages go to stdout as plain lines (the command line's style); warnings and errors to stderr."""
    logger = logging.getLogger(LOGGER_NAME)
    if getattr(logger, "_saliency_configured", False):
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
        return
    out = _CurrentStreamHandler("stdout")
    out.setFormatter(logging.Formatter("%(message)s"))
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = _CurrentStreamHandler("stderr")
    err.setFormatter(logging.Formatter("%(levelname)s: %(message)s".lower()))
    err.setLevel(logging.WARNING)
    logger.addHandler(out)
    logger.addHandler(err)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    logger._saliency_configured = True


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def write(self, text):
        get_logger().info(text)

    def close(self):
        pass


def progress_bar(total: int, *, initial: int = 0, desc: str = "", unit: str = "it", enabled: bool = True, leave: bool = True):
    """A tqdm bar on stderr, or an object with the same methods that draws nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=leave)
