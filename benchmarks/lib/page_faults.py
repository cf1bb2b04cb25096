"""Minor page faults per CPU market step, with the allocator as torch leaves it and tuned.

A market step allocates its products afresh every step: hundreds of MB at
batch 512. glibc serves every block over 32 MB (and, by default, many
smaller ones) with a fresh mmap and gives it back on free, so each step
touches new pages: tens of thousands of minor faults and kernel time per
step. `marketplace.memory.reuse_freed_memory` keeps freed memory in the process instead.
Each setting runs in its own child process (the settings are process-wide),
round-robin, so a loaded shared machine slows them alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

SETTINGS = {
    "default": {},  # the allocator as torch leaves it
    "reuse": {"MARKETPLACE_REUSE_MEMORY": "1"},  # reuse_freed_memory(): no mmap, no trimming
    "thp": {"THP_MEM_ALLOC_ENABLE": "1"},  # torch's own switch: 2 MB transparent huge pages
}


_CHILD = """
import json, resource, sys, time, torch
from marketplace.memory import reuse_freed_memory
import os
if os.environ.get("MARKETPLACE_REUSE_MEMORY") == "1":
    assert reuse_freed_memory()
from marketplace import Market
from marketplace.functional import path_losses
from marketplace.models import beautiful_mnist
from marketplace.optim import V2
m, batch, steps, formulation = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
market = Market(beautiful_mnist(3), m, formulation=formulation)
opt = V2(market, lr=0.1)
def step():
    out = market.evaluate(x, opt.vendors)
    opt.step(path_losses(out.products, y), out.paths)
step()
faults, times = [], []
for _ in range(steps):
    f0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    step()
    t1, f1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    faults.append(f1.ru_minflt - f0.ru_minflt)
    times.append({"ms": (t1 - t0) * 1e3, "sys": (f1.ru_stime - f0.ru_stime) * 1e3,
                  "user": (f1.ru_utime - f0.ru_utime) * 1e3})
print(json.dumps({"faults": faults, "times": times}))
"""


def _child(setting: str, m: int, batch: int, steps: int, formulation: str) -> dict:
    env = {**os.environ, **SETTINGS[setting]}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(m), str(batch), str(steps), formulation],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"page-fault child ({setting}) failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(m: int = 4, batch: int = 64, steps: int = 4, rounds: int = 2, formulation: str = "auto",
            settings: tuple[str, ...] = tuple(SETTINGS)) -> list[dict]:
    """Median minor faults, ms, kernel (sys) ms and user ms per V2 step under each allocator setting."""
    runs: dict[str, list[dict]] = {s: [] for s in settings}
    for _ in range(rounds):
        for s in settings:
            runs[s].append(_child(s, m, batch, steps, formulation))
    rows = []
    for s, results in runs.items():
        faults = [f for r in results for f in r["faults"]]
        times = [t for r in results for t in r["times"]]
        med = lambda key: statistics.median(t[key] for t in times)
        rows.append({"setting": s, "vendors": m, "batch": batch, "steps": len(faults),
                     "minor_faults_per_step": statistics.median(faults), "ms": med("ms"),
                     "sys_ms": med("sys"), "user_ms": med("user")})
    return rows


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["setting"] == "default"), rows[0])
    lines = ["| allocator | vendors | batch | minor faults/step | ms/step | kernel ms/step | user ms/step | "
             "ms vs default |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['vendors']} | {r['batch']} | {r['minor_faults_per_step']:,.0f} | "
                     f"{r['ms']:.1f} | {r['sys_ms']:.1f} | {r['user_ms']:.1f} | {r['ms'] / base['ms']:.2f}x |")
    return "\n".join(lines)
