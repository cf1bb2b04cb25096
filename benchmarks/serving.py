"""Random-path inference throughput against plain inference at the same batch.

    OMP_NUM_THREADS=1 uv run python benchmarks/serving.py --batch 64,256,1024

Plain inference is `market(x)` (the base weights). Random-path inference is
`marketplace.continual.serve`: every example on its own uniform random path
(`iid`), the same with an even spread of vendors (`balanced`, no padding),
and the general vmap path (`vmap`, what a spec of unknown layers gets). The
variants run interleaved round by round, so a busy shared machine slows them
alike; the table gives median examples/second and the ratio to plain
(target >= 0.8x). Expanding the vendors' deltas from their seeds happens
once per seed redraw (every K requests) and is timed on its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from marketplace import Market, draw_vendors
from marketplace.io import write_json
from marketplace.machine import cpu_name
from marketplace.models import beautiful_mnist
from marketplace.continual import serve


def machine(device: torch.device) -> dict:
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(device), "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@torch.no_grad()
def bench(market: Market, vendors, batch: int, rounds: int, device: torch.device) -> dict:
    x = torch.randn(batch, 1, 28, 28, device=device)
    g = torch.Generator().manual_seed(0)
    variants = {
        "plain": lambda: market(x),
        "iid": lambda: serve(market, vendors, x, generator=g),
        "balanced": lambda: serve(market, vendors, x, generator=g, balanced=True),
        "vmap": lambda: serve(market, vendors, x, generator=g, grouped=False),
    }
    times = {name: [] for name in variants}
    for fn in variants.values():  # warm-up (and the deltas' cache)
        fn()
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(timed(fn, device))
    plain = statistics.median(times["plain"])
    row = {"batch": batch}
    for name, ts in times.items():
        med = statistics.median(ts)
        row[f"{name}_per_s"] = batch / med
        if name != "plain":
            # ratio of medians, and the median of the per-round ratios (robust to load drifting)
            row[f"{name}_ratio"] = plain / med
            row[f"{name}_paired_ratio"] = statistics.median(p / t for p, t in zip(times["plain"], ts))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", default="64,256,1024", help="comma-separated batch sizes")
    parser.add_argument("--vendors", default="4,4,4", help="the market, e.g. 4,4,4")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/bench/serving_benchmark.json",
                        help="results/continual/early/serving_benchmark.json is the committed one")
    args = parser.parse_args()

    device = torch.device(args.device)
    counts = [int(v) for v in args.vendors.split(",")]
    torch.manual_seed(0)
    market = Market(beautiful_mnist(len(counts)), counts).to(device)
    redraw = []
    for step in range(3):  # seeds -> cached deltas, once per reconciliation
        vendors = draw_vendors(0, step, counts, [0.01] * len(counts))
        redraw.append(timed(lambda: [vendors.unit_deltas(k, market.layouts[k].numel, device)
                                     for k in range(market.depth)], device))
    rows = [bench(market, vendors, int(b), args.rounds, device) for b in args.batch.split(",")]

    info = machine(device)
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
          f"({info['torch_threads']} threads), device {info['device']}")
    print(f"market {args.vendors}; deltas expanded from seeds in {1000 * min(redraw):.1f} ms per redraw")
    print(f"{'batch':>6} {'plain ex/s':>11} {'iid ex/s':>9} {'iid x':>6} {'balanced x':>11} {'vmap x':>7}")
    for r in rows:
        print(f"{r['batch']:>6} {r['plain_per_s']:>11.0f} {r['iid_per_s']:>9.0f} {r['iid_ratio']:>6.2f} "
              f"{r['balanced_ratio']:>11.2f} {r['vmap_ratio']:>7.2f}")
    out = Path(args.out)
    write_json(out, {"machine": info, "market": counts, "rounds": args.rounds, "redraw_ms": 1000 * min(redraw),
                     "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
