"""What a benchmark result was measured on: one description shared by every script here."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str | None = None) -> dict:
    """CPU, cores, threads, versions, GPU and the load average (timings on a busy machine mean little)."""
    from discovery.io import run_manifest

    device = torch.device(device or "cpu")
    info = run_manifest()
    info.update(
        cpu=cpu_model(),
        cpu_count=os.cpu_count(),
        cpus_usable=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        device=str(device),
        load_average_1_5_15=[round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info
