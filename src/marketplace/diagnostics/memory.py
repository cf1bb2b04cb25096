"""Peak tensor memory of one call: the most tensor bytes it holds above those live before it.

Tensor bytes, not RSS: the process's resident memory mixes in torch itself,
allocator caches and whatever earlier work left behind, so it cannot be
charged to one step. On CUDA the allocator keeps the peak; on the CPU it is
read from the profiler's raw allocation and free events, which see a
temporary allocated and freed inside one op (a conv's workspace) too; the
ops themselves are not recorded (their events outweigh a large step).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch.autograd import DeviceType

from ..errors import MarketplaceError


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send fd 2 to /dev/null: the profiler's native library logs every start and stop there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def ops_unrecorded() -> Iterator[None]:
    """Let the profiler record allocations but no ops (on this thread and the ones its ops start).

    A dense ResNet-18 step runs millions of ops; their events took more memory than the step itself.
    """
    torch.autograd._enable_record_function(False)
    try:
        yield
    finally:
        torch.autograd._enable_record_function(True)


def peak_tensor_bytes(fn: Callable[[], object], device: torch.device | str | None = None) -> int:
    """The most tensor bytes held above those live at the start while fn runs on `device` (default CPU).

    CUDA: `max_memory_allocated` after a reset, minus `memory_allocated`
    before. CPU: the running sum of the profiler's allocation (+) and free
    (-) events in time order, its maximum. The profiler reports the free of
    a tensor live before fn only at times (when an earlier profile saw its
    address), so such frees are never credited: a free counts only against
    an allocation of the same size made while fn runs. That keeps the figure
    deterministic; where fn frees a tensor it did not make, it can exceed
    the CUDA one.
    The events cost host memory, about 2 KB per allocation fn makes.
    Warnings fn raises are held while stderr is silenced and raised again
    after it, so callers see them as usual.
    """
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        raise MarketplaceError(f"peak_tensor_bytes measures cpu or cuda, not {device.type}")
    held: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as held, native_stderr_silenced(), \
                torch.autograd.profiler.profile(profile_memory=True, use_kineto=False) as prof, ops_unrecorded():
            warnings.simplefilter("always")
            fn()
    finally:
        for w in held:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    events = [e for e in prof.kineto_results.events() if e.name() == "[memory]" and e.device_type() == DeviceType.CPU]
    if not events:
        return 0
    return running_peak([e.nbytes() for e in sorted(events, key=lambda e: e.start_ns())])


def running_peak(nbytes: list[int]) -> int:
    """The most bytes held, from allocation (+) and free (-) sizes in time order.

    A free is credited only against an outstanding allocation of the same
    size from the same list: frees of memory allocated before are ignored.
    """
    outstanding: Counter[int] = Counter()
    held = peak = 0
    for n in nbytes:
        if n >= 0:
            outstanding[n] += 1
        elif outstanding[-n]:
            outstanding[-n] -= 1
        else:
            continue
        held += n
        peak = max(peak, held)
    return peak
