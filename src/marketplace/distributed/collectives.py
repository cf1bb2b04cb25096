"""Collectives that count their bytes and fail with a clear error.

Every tensor a rank hands to torch.distributed goes through `Collectives`,
so the byte counter is a measurement of what the training loop sends, not
the algorithm's own estimate of it. A failed or timed-out collective (a peer
died or stalled) becomes one `DistributedError` that names the rank, the
operation and the timeout, instead of a C++ stack or a hang.
"""

from __future__ import annotations

import pickle
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from ..errors import DistributedError


def ring_bytes_sent(op: str, nbytes: int, world_size: int) -> float:
    """Bytes one rank puts on the wire for `op` over `nbytes` of its own payload, ring algorithms.

    all_reduce: 2 (n-1)/n x nbytes (reduce-scatter, then all-gather of the
    reduced chunks); all_gather: (n-1) x nbytes (each block crosses n-1
    links); broadcast: (n-1)/n x nbytes on average (every rank but the last
    of the ring forwards the whole message). A world of one sends nothing.
    """
    n = world_size
    if op == "all_reduce":
        return 2 * (n - 1) / n * nbytes
    if op == "all_gather":
        return (n - 1) * nbytes
    if op == "broadcast":
        return (n - 1) / n * nbytes
    raise ValueError(f"unknown collective {op!r}")


@dataclass
class ByteCounter:
    """Per label ("step", "check", "eval", ...): calls, payload bytes and ring wire bytes of this rank."""

    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    payload: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sent: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, label: str, op: str, nbytes: int, world_size: int) -> None:
        self.calls[label] += 1
        self.payload[label] += nbytes
        self.sent[label] += ring_bytes_sent(op, nbytes, world_size)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {label: {"calls": self.calls[label], "payload": self.payload[label], "sent": round(self.sent[label], 1)}
                for label in sorted(self.calls)}


class Collectives:
    """Sum, gather and broadcast over the default process group, counted per label.

    rank, world_size: this process's place in the group. device: where the
    backend wants tensors (CUDA for NCCL, CPU for gloo); inputs on another
    device are moved there and the results moved back. train_device: where
    this rank keeps its model (cuda:LOCAL_RANK or the CPU). Without an
    initialised process group (a world of one) the operations are identities
    that still count their payload, so one code path serves both.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                 timeout: float | None = None, backend: str | None = None,
                 train_device: torch.device | str | None = None):
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.train_device = torch.device(train_device) if train_device is not None else self.device
        self.timeout, self.backend = timeout, backend
        self.counter = ByteCounter()

    @property
    def connected(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def all_reduce(self, tensor: torch.Tensor, label: str) -> torch.Tensor:
        """The sum over ranks of `tensor` (a new tensor on the input's device)."""
        if not self.connected:
            return self._alone(tensor, label, "all_reduce")
        buf = tensor.detach().to(self.device, copy=True).contiguous()
        self._count(label, "all_reduce", buf)
        self._run("all_reduce", label, lambda: dist.all_reduce(buf, op=dist.ReduceOp.SUM))
        return buf.to(tensor.device)

    def all_gather(self, tensor: torch.Tensor, label: str) -> torch.Tensor:
        """Every rank's `tensor`, stacked in rank order: [world_size, *tensor.shape]."""
        if not self.connected:
            return self._alone(tensor, label, "all_gather").unsqueeze(0)
        buf = tensor.detach().to(self.device).contiguous()
        self._count(label, "all_gather", buf)
        out = [torch.empty_like(buf) for _ in range(self.world_size)]
        self._run("all_gather", label, lambda: dist.all_gather(out, buf))
        return torch.stack(out).to(tensor.device)

    def broadcast(self, tensor: torch.Tensor, label: str, src: int = 0) -> torch.Tensor:
        """Rank `src`'s `tensor`, on every rank."""
        if not self.connected:
            return self._alone(tensor, label, "broadcast")
        buf = tensor.detach().to(self.device, copy=True).contiguous()
        self._count(label, "broadcast", buf)
        self._run("broadcast", label, lambda: dist.broadcast(buf, src=src))
        return buf.to(tensor.device)

    def broadcast_object(self, obj: Any, label: str, src: int = 0) -> Any:
        """Rank `src`'s picklable `obj`, on every rank (start-up only: sizes travel first)."""
        data = pickle.dumps(obj) if self.rank == src else b""
        size = self.broadcast(torch.tensor([len(data)], dtype=torch.int64), label, src)
        buf = torch.zeros(int(size), dtype=torch.uint8)
        if self.rank == src:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return pickle.loads(self.broadcast(buf, label, src).numpy().tobytes())

    def _alone(self, tensor: torch.Tensor, label: str, op: str) -> torch.Tensor:
        """A world of one: the result is a copy of the input, where it is (no trip to the backend's device)."""
        self._count(label, op, tensor)
        return tensor.detach().clone()

    def _count(self, label: str, op: str, buf: torch.Tensor) -> None:
        self.counter.add(label, op, buf.numel() * buf.element_size(), self.world_size)

    def _run(self, op: str, label: str, fn) -> None:
        start = time.monotonic()
        try:
            fn()
        except RuntimeError as e:  # DistBackendError and gloo/NCCL failures are RuntimeErrors
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            timeout = f"{self.timeout:g} s" if self.timeout else "the default"
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: {op} of {label!r} failed after "
                f"{time.monotonic() - start:.1f} s (timeout {timeout}): another rank died, stalled or "
                f"cannot be reached ({first[:300]})"
            ) from e
