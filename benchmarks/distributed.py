"""Bytes on the wire per step, against DDP, and steps/s with 1, 2 and 4 gloo CPU processes.

    OMP_NUM_THREADS=1 MARKETPLACE_OFFLINE=1 uv run python benchmarks/distributed.py

Bytes are measured: every rank runs real steps of `marketplace.distributed`
and its byte counter reports what it handed to the collectives (payload)
and, under ring algorithms, what it put on the wire. DDP is the gradient
all-reduce of the same model, computed: payload = parameters x 4 bytes
(float32), wire = 2 (n-1)/n x payload per rank (ring all-reduce). The
ratio is DDP / ours for the same axis shape; it does not depend on n for
the data axis (both are all-reduces) and is given for n = 2 and n = 4 for
the replica axis (an all-gather sends (n-1) x its payload).

Models: the beautiful-MNIST CNN (market 4x4x4 and the published 16x16x16)
and a ResNet-18-size network (11.7M parameters, GroupNorm for BatchNorm,
3x32x32 inputs, 1000 classes; market 4x4x4x4). Speed: the CNN with market
4x4x4, V2, batch 64, on MNIST, 1/2/4 ranks forked on this machine, one
thread each. Writes runs/bench/distributed_cpu.{json,md} (`--out benchmarks/results/distributed_cpu`
updates the committed table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from marketplace.io import write_atomic, write_json
from marketplace.machine import cpu_name
from marketplace import V1, V2, Market, path_losses
from marketplace.distributed import AXES, init_from_env, ring_bytes_sent, run_local, shutdown
from marketplace.models import beautiful_mnist
from marketplace.training import batch_indices

RUNS = Path("runs") / "bench"  # default output: never over the committed results


# -- a ResNet-18-size market ----------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet's basic block with GroupNorm (a Market refuses BatchNorm): as many parameters as BN's."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(32, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(32, c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.GroupNorm(32, c_out))

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


def resnet18_specs(classes: int = 1000) -> list[nn.Module]:
    """ResNet-18 as 4 specs: stem + layer1 | layer2 | layer3 | layer4 + head (11,689,512 parameters)."""
    layer = lambda c_in, c_out, stride: [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
    stem = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.GroupNorm(32, 64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    return [nn.Sequential(*stem, *layer(64, 64, 1)), nn.Sequential(*layer(64, 128, 2)),
            nn.Sequential(*layer(128, 256, 2)),
            nn.Sequential(*layer(256, 512, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))]


MODELS = {
    "beautiful-mnist CNN": dict(specs=lambda: beautiful_mnist(3), shape=(1, 28, 28), classes=10),
    "ResNet-18-size": dict(specs=resnet18_specs, shape=(3, 32, 32), classes=1000),
}


def build(model: str, vendors: tuple[int, ...], algorithm: str = "v2"):
    spec = MODELS[model]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        market = Market(spec["specs"](), list(vendors))
    opt = V2(market, lr=0.1, probe_scale=0.1, seed=0) if algorithm == "v2" else V1(market, lr=0.02, seed=0)
    return market, opt


# -- one rank ------------------------------------------------------------------------


def rank_steps(rank, world, model, vendors, axis_name, batch, steps, warmup, data):
    """Run warmup + steps on one rank; report the byte counter and the timed steps' seconds."""
    torch.manual_seed(1)  # the random data is the same on every rank
    spec = MODELS[model]
    if data is None:
        x, y = torch.randn(256, *spec["shape"]), torch.randint(0, spec["classes"], (256,))
    else:
        x, y = data
    comm = init_from_env(timeout=300)
    try:
        market, opt = build(model, vendors)
        axis = AXES[axis_name](comm)
        start = None
        for step in range(warmup + steps):
            if step == warmup:
                counter_before = dict(comm.counter.payload), dict(comm.counter.sent)
                comm.all_reduce(torch.zeros(1), "sync")  # start the clock together
                start = time.perf_counter()
            idx = batch_indices(0, step, len(x), batch)[axis.shard(batch)]
            xb, yb = x[idx], y[idx]
            evaluate = lambda v: (lambda out: (path_losses(out.products, yb), out.paths))(market.evaluate(xb, v))
            axis.step(opt, evaluate, batch)
        comm.all_reduce(torch.zeros(1), "sync")
        seconds = time.perf_counter() - start
        payload = comm.counter.payload["step"] - counter_before[0].get("step", 0)
        sent = comm.counter.sent["step"] - counter_before[1].get("step", 0.0)
        return {"seconds": seconds, "payload_per_step": payload / steps, "sent_per_step": sent / steps}
    finally:
        shutdown()


def launch(world, *args, timeout=300.0):
    results = run_local(rank_steps, world, *args, timeout=timeout)
    bad = [r for r in results if not isinstance(r, dict)]
    if bad:
        raise SystemExit(f"a rank failed: {bad[0]}")
    return results


# -- the two measurements -----------------------------------------------------------------


def measure_bytes(model: str, vendors: tuple[int, ...], world: int) -> list[dict]:
    market, _ = build(model, vendors)
    params = sum(p.numel() for p in market.parameters())
    ddp = params * 4
    rows = []
    for axis in ("data", "replica"):
        t = time.perf_counter()
        r = launch(world, model, vendors, axis, 2 * world, 1, 0, None)[0]
        row = {"model": model, "parameters": params, "market": "x".join(map(str, vendors)),
               "paths": market.num_paths, "axis": axis, "measured_world": world,
               "bytes_per_step": r["payload_per_step"], "ddp_bytes_per_step": ddp,
               "ratio": ddp / r["payload_per_step"], "seconds": round(time.perf_counter() - t, 1)}
        for n in (2, 4):  # wire bytes per rank, ring algorithms
            op = "all_reduce" if axis == "data" else "all_gather"
            ours = ring_bytes_sent(op, r["payload_per_step"], n)
            theirs = ring_bytes_sent("all_reduce", ddp, n)
            row[f"wire_n{n}"], row[f"ddp_wire_n{n}"], row[f"wire_ratio_n{n}"] = ours, theirs, theirs / ours
        rows.append(row)
        print(f"  {model:20s} {row['market']:>8s} {axis:8s} {row['bytes_per_step']:>9.0f} B  "
              f"DDP {ddp:>12,d} B  x{row['ratio']:,.0f}  ({row['seconds']} s)", flush=True)
    return rows


def measure_speed(worlds, batch: int, steps: int, data) -> list[dict]:
    rows = []
    for axis in ("data", "replica"):
        for world in worlds:
            results = launch(world, "beautiful-mnist CNN", (4, 4, 4), axis, batch, steps, 2, data)
            seconds = max(r["seconds"] for r in results)
            row = {"axis": axis, "ranks": world, "batch": batch, "steps": steps,
                   "steps_per_second": steps / seconds,
                   "examples_per_second": steps * batch / seconds,
                   "vendors_per_step": 12 * (world if axis == "replica" else 1),
                   "bytes_per_step": results[0]["payload_per_step"]}
            rows.append(row)
            print(f"  {axis:8s} {world} rank(s): {row['steps_per_second']:.2f} steps/s, "
                  f"{row['vendors_per_step']} vendors/step, {row['bytes_per_step']:.0f} B/step", flush=True)
    return rows


def machine() -> dict:
    cpu = cpu_name()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "threads_per_rank": 1, "torch": torch.__version__,
            "python": platform.python_version(), "backend": "gloo", "load_average_1min_at_start": load}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Distributed training: bytes per step and speed (CPU, gloo)",
        "",
        f"Machine: {m['cores']}-core CPU ({m['cpu']}), no GPU, torch {m['torch']}, gloo, one thread per rank; "
        f"shared with other jobs (1-minute load average {m['load_average_1min_at_start']:.1f} at the start of "
        "the last run). Produced by `benchmarks/distributed.py`.",
        "",
        "## Bytes per rank per step (measured) against a DDP gradient all-reduce",
        "",
        "Payload: the bytes a rank hands to the step's collective, from the byte counter (measured with 4 ranks "
        "for the CNN 4x4x4, 2 for the others; it does not depend on the number of ranks). DDP: parameters x 4 "
        "bytes. Wire per rank with n ranks, ring algorithms: all-reduce 2(n-1)/n x payload (data axis, DDP), "
        "all-gather (n-1) x payload (replica axis).",
        "",
        "| model | parameters | market | axis | payload B/step | DDP payload B/step | ratio "
        "| wire B/step n=4 | DDP wire n=4 | wire ratio n=4 |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["bytes"] or []:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['market']} | {r['axis']} "
                     f"| {r['bytes_per_step']:,.0f} | {r['ddp_bytes_per_step']:,} | {r['ratio']:,.0f}x "
                     f"| {r['wire_n4']:,.0f} | {r['ddp_wire_n4']:,.0f} | {r['wire_ratio_n4']:,.0f}x |")
    if not result["speed"]:
        return "\n".join(lines + ["", "(speed not measured yet: run with --only speed)", ""])
    batch = result["speed"][0]["batch"]
    lines += ["", f"## Steps per second: beautiful-MNIST CNN, market 4x4x4, V2, batch {batch}", "",
              "| axis | ranks | steps/s | vendors probed per step | payload B/step |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for r in result["speed"]:
        lines.append(f"| {r['axis']} | {r['ranks']} | {r['steps_per_second']:.2f} | {r['vendors_per_step']} "
                     f"| {r['bytes_per_step']:,.0f} |")
    lines += ["", f"Data axis: the ranks split each batch of {batch}. Replica axis: every rank evaluates the "
              "whole batch on its own 12 vendors, so a step probes 12 x ranks vendors. Ranks beyond the 2 cores "
              "share them, and so do the other jobs on this machine: read the speeds as rough.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per speed run (after 2 warm-up steps)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--worlds", default="1,2,4")
    parser.add_argument("--only", choices=["bytes", "speed"], help="run one part; the other is kept from --out")
    parser.add_argument("--out", default=str(RUNS / "distributed_cpu"),
                        help="default runs/bench/distributed_cpu; benchmarks/results/distributed_cpu is the committed one")
    args = parser.parse_args()
    out = Path(args.out)
    previous = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    torch.set_num_threads(1)
    info = machine()
    print(f"{info['cores']}-core CPU ({info['cpu']}), torch {info['torch']}, gloo", flush=True)
    try:
        from marketplace.data import load_data

        x, y = load_data("mnist", "train", None, torch.device("cpu"))
        data = (x[:4096].clone(), y[:4096].clone())
    except Exception as e:  # no MNIST here: random images time the same
        print(f"  (MNIST not found: {e}; timing on random images)")
        data = None
    rows, speed = previous.get("bytes"), previous.get("speed")
    if args.only != "speed":
        print("bytes per rank per step:", flush=True)
        rows = measure_bytes("beautiful-mnist CNN", (4, 4, 4), 4)
        rows += measure_bytes("beautiful-mnist CNN", (16, 16, 16), 2)
        rows += measure_bytes("ResNet-18-size", (4, 4, 4, 4), 2)
    if args.only != "bytes":
        print("steps per second:", flush=True)
        speed = measure_speed([int(w) for w in args.worlds.split(",")], args.batch, args.steps, data)
    result = {"machine": info, "bytes": rows, "speed": speed,
              "formulas": {"ddp_payload": "parameters x 4 bytes", "all_reduce_wire": "2 (n-1)/n x payload",
                           "all_gather_wire": "(n-1) x payload",
                           "data_axis_payload": "P x 4 bytes (P = paths)",
                           "replica_v2_payload": "(1 + 2 x sum_k M_k) x 8 bytes"}}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), result)
    write_atomic(out.with_suffix(".md"), markdown(result))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
