"""The machine: which device to run on, and the machine a result was measured on, in words."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .errors import MarketplaceError


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def machine_summary() -> str:
    """The CPU (and GPU) this process runs on, with the torch version, in words."""
    threads = torch.get_num_threads()
    text = (f"{os.cpu_count()}-core {cpu_name()}, torch {torch.__version__} "
            f"({threads} intra-op thread{'s' * (threads > 1)})")
    return text + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when present), `cpu`, `cuda`, `cuda:1`, ...: a one-line error for anything else."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise MarketplaceError(f"unknown device {name!r}: {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MarketplaceError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device
