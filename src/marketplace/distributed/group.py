"""Joining the process group that torchrun describes: gloo on CPU, NCCL on CUDA.

torchrun (or any launcher) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT; `init_from_env` reads them. Without them the process is a
world of one and no process group is created. Every collective carries the
timeout, so a rank that dies or hangs makes the others fail with a
`DistributedError` instead of waiting forever.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from .. import checks
from ..errors import MarketplaceError
from .collectives import Collectives, DistributedError

BACKENDS = ("auto", "gloo", "nccl")
ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise MarketplaceError(f"${name} is not set: launch with torchrun (see docs/distributed.md)")
        return default
    try:
        return int(value)
    except ValueError:
        raise MarketplaceError(f"${name} must be an integer, got {value!r}") from None


def _pick(backend: str, device: str, local_rank: int) -> tuple[str, torch.device, torch.device]:
    """The backend, the device its collectives use and the device this rank trains on.

    NCCL: both are cuda:LOCAL_RANK. gloo: collectives on the CPU; training on
    the CPU, or on cuda:LOCAL_RANK when the device asks for CUDA.
    """
    checks.known("backend", backend, BACKENDS)
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise MarketplaceError(f"unknown device {device!r}; distributed runs take auto, cpu or cuda")
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda and not torch.cuda.is_available():
        raise MarketplaceError(f"device {device!r} asked for, but torch sees no CUDA device")
    if wants_cuda and local_rank >= torch.cuda.device_count():
        raise MarketplaceError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                               "start at most one process per GPU")
    gpu = torch.device("cuda", local_rank) if wants_cuda else None
    if backend == "auto":
        backend = "nccl" if wants_cuda else "gloo"
    if backend == "gloo":
        return backend, torch.device("cpu"), gpu or torch.device("cpu")
    if gpu is None:
        raise checks.fail("backend nccl works on CUDA tensors; use backend gloo on the CPU", "backend")
    return backend, gpu, gpu


def init_from_env(backend: str = "auto", device: str = "auto", timeout: float = 120.0) -> Collectives:
    """Join the process group of this job and return its counted collectives.

    backend: auto (NCCL when the device is CUDA, else gloo), gloo or nccl.
    device: auto, cpu or cuda; with NCCL each rank takes cuda:LOCAL_RANK.
    timeout: seconds any collective (and the rendezvous) may wait for a peer.
    """
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise checks.fail(f"timeout must be > 0 seconds, got {timeout!r}", "timeout")
    if not any(name in os.environ for name in ENV):
        _, comm_device, train_device = _pick(backend, device, 0)
        return Collectives(0, 1, comm_device, timeout, backend=None, train_device=train_device)
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK", rank)
    if not 0 <= rank < world:
        raise MarketplaceError(f"RANK {rank} is outside WORLD_SIZE {world}")
    backend, comm_device, train_device = _pick(backend, device, local_rank)
    options = dict(backend=backend, timeout=timedelta(seconds=timeout), rank=rank, world_size=world)
    if train_device.type == "cuda":
        torch.cuda.set_device(train_device)
    if backend == "nccl":
        # Raise in the calling thread when a collective times out, rather than
        # letting the watchdog abort the process with no Python error.
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
        options["device_id"] = comm_device
    if not dist.is_initialized():
        try:
            dist.init_process_group(**options)
        except (RuntimeError, ValueError) as e:  # DistStoreError, a refused or unreachable master
            where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DistributedError(f"rank {rank} of {world} could not join the {backend} group at {where} "
                                   f"within {timeout:g} s: {first[:300]}") from e
    return Collectives(rank, world, comm_device, timeout, backend, train_device=train_device)


def shutdown() -> None:
    """Leave the process group (safe to call when there is none, or after a peer died)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except RuntimeError:
            pass
