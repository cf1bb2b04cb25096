"""Run W ranks of a function on this machine, for tests, benchmarks and notebooks.

torchrun is the launcher for real jobs. Here each rank is a forked child of
the caller: it shares the caller's imported modules and loaded data (no
second `import torch`, which costs seconds), gets torchrun's environment
variables for a free localhost port, and hands back what the function
returns. Fork is for CPU work: a parent that has initialised CUDA must use
start_method="spawn" (and an importable function).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import socket
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class RankFailure:
    """A rank that raised (error and message set) or died (exitcode only)."""

    rank: int
    exitcode: int | None
    error: str = ""
    message: str = ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(fn: Callable, rank: int, world_size: int, port: int, out: Path, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)  # W ranks share the cores; a forked child must not reuse the parent's pool
    code = 0
    try:
        result: Any = fn(rank, world_size, *args)
    except BaseException as e:  # report everything; the parent decides
        result = RankFailure(rank, 1, type(e).__name__, f"{e}\n{traceback.format_exc()}")
        code = 1
    try:
        payload = pickle.dumps(result)
    except Exception as e:
        payload, code = pickle.dumps(RankFailure(rank, 1, "PicklingError", str(e))), 1
    (out / f"rank{rank}.pkl").write_bytes(payload)
    os._exit(code)  # skip the parent's atexit handlers (pytest's among them)


def run_local(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 120.0,
              start_method: str = "fork") -> list[Any]:
    """fn(rank, world_size, *args) on `world_size` local processes; their results in rank order.

    Each rank sees RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a
    free MASTER_PORT, as under torchrun, and OMP_NUM_THREADS=1. A rank that
    raises or dies gives a `RankFailure` in its place; ranks still running
    after `timeout` seconds are killed.
    """
    ctx = mp.get_context(start_method)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="marketplace-ranks-") as tmp:
        out = Path(tmp)
        procs = [ctx.Process(target=_child, args=(fn, r, world_size, port, out, args), daemon=True)
                 for r in range(world_size)]
        with warnings.catch_warnings():
            # Python >= 3.12 warns that fork from a threaded process may deadlock; the
            # children run torch on one thread and never touch the parent's pool.
            warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks",
                                    category=DeprecationWarning)
            for p in procs:
                p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        results = []
        for r, p in enumerate(procs):
            file = out / f"rank{r}.pkl"
            if file.exists():
                results.append(pickle.loads(file.read_bytes()))
            else:
                results.append(RankFailure(r, p.exitcode, "", "no result: the rank died or was killed"))
        return results
