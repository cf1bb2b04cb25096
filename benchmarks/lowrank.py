"""Low-rank vendors against dense ones: memory per vendor, peak memory and time of a market step, quality.

    OMP_NUM_THREADS=1 uv run python benchmarks/lowrank.py                 # CPU: the four configs, ranks 0/1/4
    uv run python benchmarks/lowrank.py --device cuda
    uv run python benchmarks/lowrank.py --configs mnist-cnn:2x2x2 --rounds 1 --batch 4   # a quick look
    OMP_NUM_THREADS=1 uv run python benchmarks/lowrank.py --quality       # + MNIST accuracy at 1,500 steps

Each config is a model and a vendor layout; its rows are the same market at
rank 0 (dense vendors) and each of --ranks, side by side in one run:

- mnist-cnn:4x4x4, 8x8x8, 16x16x16: the beautiful-MNIST CNN split 3 ways,
  full sampling, batch 128;
- resnet18:16x16x16x16: the library's GroupNorm ResNet-18 (11.2M parameters,
  3x32x32 inputs, 10 classes) split 4 ways, each downstream vendor taking one
  upstream product (sampling 0,1,1,1: 16 paths), batch 8.

Inputs are random tensors of the data's shape: neither memory nor time
depends on their values. A step is `market.evaluate` + `path_losses` + one V2
`step` (cached vendors: each spec's draws are kept for the step).

Columns. Per vendor: the float32 numbers a vendor of each spec is drawn as
and stored as in the batched forward (dense: every parameter; rank r: r *
(out + in) per factored weight plus the dense rest), and their bytes summed
over specs. Vendor MB: those numbers for every vendor of the step. Peak MB:
the most tensor memory one step holds above what was live before it
(`marketplace.diagnostics.peak_tensor_bytes`). On CUDA that is
`torch.cuda.max_memory_allocated` (after a reset) minus `memory_allocated`
before the step. On the CPU it is the running sum of the profiler's raw
allocation and free events (`profile_memory=True`) in time order: every
allocation and free of torch's CPU allocator, a temporary allocated and
freed inside one op (a conv's workspace) included. That counts what the
CUDA figure counts (tensor bytes, not allocator caches, RSS or the Python
heap) and is deterministic. Vendor share: vendor MB / peak MB (the draws
held through the step; the dense route also stacks one spec's weights per
vendor for its forward, so the true share is higher). Step ms: median of
--rounds interleaved rounds (one step of each rank per round, so a busy
machine slows them alike), and its ratio to dense.

Memory of the run: between steps a market holds only its weights (11.2M
float32 numbers for ResNet-18, at every rank); a step's activations (GBs
for a dense ResNet-18 step) are freed when it ends. So the ranks' markets
are built one at a time, each warmed up and its peak measured after a gc
while no other step runs, and all are kept for the interleaved timing: the
process holds one step's memory at a time plus every rank's weights. On
the CPU the measured step also costs the profiler's events, about 2 KB per
allocation: a dense ResNet-18 step makes 3.6M, and the run's RSS peaks
near 9 GB, against 5 GB for the step alone.

--quality adds test accuracy at equal steps on the MNIST protocol
(`TrainConfig` defaults: 4x4x4, batch 128, 1,500 steps, seeds 0/1/2; all
10,000 test images) for rank 0 and each of --ranks.

Writes runs/bench/lowrank_<device>.{json,md} unless --out is given
(`--out benchmarks/results/lowrank_cpu` updates the committed one).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.*, from any working directory

from marketplace import V2, Market, path_losses  # noqa: E402
from marketplace.diagnostics import peak_tensor_bytes  # noqa: E402
from marketplace.io import write_atomic, write_json  # noqa: E402
from marketplace.lowrank import spec_plan  # noqa: E402
from marketplace.machine import machine_summary, resolve_device  # noqa: E402
from marketplace.models import beautiful_mnist, resnet  # noqa: E402

RUNS = Path("runs") / "bench"  # default output: never over the committed results
CONFIGS = "mnist-cnn:4x4x4,mnist-cnn:8x8x8,mnist-cnn:16x16x16,resnet18:16x16x16x16"
# model -> (specs for a depth, input shape, classes, default batch, downstream sampling)
MODELS = {
    "mnist-cnn": (lambda depth: beautiful_mnist(depth), (1, 28, 28), 10, 128, 0),
    "resnet18": (lambda depth: resnet(depth, 3, 10, "resnet18"), (3, 32, 32), 10, 8, 1),
    "resnet8": (lambda depth: resnet(depth, 3, 10, "resnet8"), (3, 32, 32), 10, 8, 1),  # small, for tests
}
BYTES = 4  # float32


def parse_config(text: str) -> tuple[str, tuple[int, ...]]:
    """'mnist-cnn:4x4x4' -> ('mnist-cnn', (4, 4, 4))."""
    model, _, layout = text.partition(":")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} in {text!r}; choose from {', '.join(MODELS)}")
    try:
        vendors = tuple(int(v) for v in layout.split("x"))
    except ValueError:
        raise ValueError(f"{text!r}: the layout is vendors per spec, e.g. {model}:4x4x4") from None
    return model, vendors


def build(model: str, vendors: tuple[int, ...], rank: int, device: torch.device) -> tuple[Market, V2]:
    """The same initial weights at every rank (seed 0), V2 at the published rates."""
    specs_of, _, _, _, sampling = MODELS[model]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        specs = specs_of(len(vendors))
    market = Market(specs, list(vendors), [0] + [sampling] * (len(vendors) - 1), rank=rank).to(device)
    return market, V2(market, lr=0.1, probe_scale=0.1, seed=0)


def per_vendor(market: Market, rank: int) -> list[dict]:
    """Per spec: the numbers one vendor is drawn as (= stored as), and each weight's share of them."""
    out = []
    for spec, layout in zip(market.specs, market.layouts):
        plan = spec_plan(spec, layout.names, layout.shapes, rank)
        weights = {}
        for name, shape in zip(layout.names, layout.shapes):
            entry = {"shape": list(shape), "dense": shape.numel()}
            if name in plan.ranks:
                rows, cols = plan.rows_cols(name)
                entry.update(rank=plan.ranks[name], numbers=plan.ranks[name] * (rows + cols))
            else:
                entry["numbers"] = shape.numel()
            weights[name] = entry
        numbers = plan.draws if rank else layout.numel
        out.append({"numbers": numbers, "bytes": BYTES * numbers, "weights": weights})
    return out


def market_step(market: Market, opt: V2, x: torch.Tensor, y: torch.Tensor) -> None:
    out = market.evaluate(x, opt.vendors)
    opt.step(path_losses(out.products, y), out.paths)


def timed_step(market, opt, x, y, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    market_step(market, opt, x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def peak_step_bytes(market, opt, x, y, device) -> int:
    """Peak tensor bytes of one step above those live before it (see the module docstring)."""
    return peak_tensor_bytes(lambda: market_step(market, opt, x, y), device)


def bench_config(model: str, vendors: tuple[int, ...], ranks: list[int], batch: int | None, rounds: int,
                 warmup: int, device: torch.device) -> list[dict]:
    """One row per rank: per-vendor numbers, vendor bytes, peak bytes and step time of one config."""
    _, shape, classes, default_batch, _ = MODELS[model]
    batch = batch or default_batch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    runs, rows = {}, {}
    for r in ranks:  # one at a time: a market holds only its weights between steps (module docstring)
        market, opt = runs[r] = build(model, vendors, r, device)
        for _ in range(warmup):
            market_step(market, opt, x, y)
        specs = per_vendor(market, r)
        vendor_bytes = sum(m * s["bytes"] for m, s in zip(market.vendor_counts, specs))
        gc.collect()
        peak = peak_step_bytes(market, opt, x, y, device)
        rows[r] = {"model": model, "layout": "x".join(map(str, vendors)), "rank": r, "batch": batch,
                   "sampling": list(market.sampling), "paths": market.num_paths,
                   "parameters": sum(p.numel() for p in market.parameters()),
                   "per_vendor": specs, "per_vendor_bytes": sum(s["bytes"] for s in specs),
                   "vendor_bytes": vendor_bytes, "peak_step_bytes": peak,
                   "vendor_share": vendor_bytes / peak if peak else None, "times_s": []}
        print(f"{model}:{rows[r]['layout']} rank {r}: peak {mb(peak)} MB", flush=True)
    for i in range(rounds):
        for r, (market, opt) in runs.items():
            rows[r]["times_s"].append(timed_step(market, opt, x, y, device))
        print(f"{model}:{rows[ranks[0]]['layout']} round {i + 1}/{rounds}: "
              + "  ".join(f"rank {r} {1000 * rows[r]['times_s'][-1]:.1f} ms" for r in ranks), flush=True)
    dense = rows[ranks[0]]
    for row in rows.values():
        row["step_ms"] = 1000 * statistics.median(row["times_s"])
        row["step_vs_dense"] = row["step_ms"] / dense["step_ms"]
        row["per_vendor_vs_dense"] = row["per_vendor_bytes"] / dense["per_vendor_bytes"]
        row["peak_vs_dense"] = row["peak_step_bytes"] / dense["peak_step_bytes"] if dense["peak_step_bytes"] else None
    return list(rows.values())


def quality(ranks: list[int], seeds: list[int], steps: int, device: str, data_dir: str | None) -> list[dict]:
    """Test accuracy after `steps` steps of the MNIST protocol (TrainConfig's defaults), per rank and seed."""
    from marketplace.training import TrainConfig, Trainer

    out = []
    for r in ranks:
        accuracies = []
        for seed in seeds:
            config = TrainConfig(steps=steps, seed=seed, rank=r, device=device, data_dir=data_dir,
                                 eval_every=max(steps, 1), log_every=max(steps, 1))
            accuracies.append(Trainer(config).run()["test_accuracy"])
            print(f"quality: rank {r} seed {seed}: {accuracies[-1]:.2f}% after {steps} steps", flush=True)
        out.append({"rank": r, "seeds": seeds, "steps": steps, "vendors": list(TrainConfig.vendors),
                    "batch": TrainConfig.batch, "test_accuracy": accuracies,
                    "mean": statistics.mean(accuracies),
                    "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0})
    return out


def mb(n: float) -> str:
    return f"{n / 2**20:,.2f}"


def markdown(result: dict) -> str:
    lines = [f"# Low-rank vendors against dense ones ({result['device']})", "",
             f"Machine: {result['machine']}. Load average {result['load_average']} (1, 5, 15 min). "
             f"Peak memory: {result['peak_method']}. Step time: median of {result['rounds']} interleaved rounds."]
    if result["rows"]:
        lines += ["", "| model | vendors | batch | rank | numbers per vendor, per spec | per vendor (KB) | x dense "
                  "| vendor MB | peak MB | vendor share | x dense | step ms | x dense |",
                  "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        numbers = " / ".join(f"{s['numbers']:,}" for s in r["per_vendor"])
        share = "" if r["vendor_share"] is None else f"{100 * r['vendor_share']:.0f}%"
        peak_x = "" if r["peak_vs_dense"] is None else f"{r['peak_vs_dense']:.2f}"
        lines.append(f"| {r['model']} | {r['layout']} | {r['batch']} | {r['rank'] or 'dense'} | {numbers} "
                     f"| {r['per_vendor_bytes'] / 1024:,.1f} | {r['per_vendor_vs_dense']:.3f} | {mb(r['vendor_bytes'])} "
                     f"| {mb(r['peak_step_bytes'])} | {share} | {peak_x} | {r['step_ms']:.1f} "
                     f"| {r['step_vs_dense']:.2f} |")
    if result.get("quality"):
        q = result["quality"][0]
        lines += ["", f"Quality: MNIST, {'x'.join(map(str, q['vendors']))}, batch {q['batch']}, {q['steps']} steps, "
                  f"seeds {', '.join(map(str, q['seeds']))}; test accuracy on all 10,000 at the end.", "",
                  "| rank | accuracy per seed (%) | mean ± std |", "| --- | --- | ---: |"]
        for q in result["quality"]:
            lines.append(f"| {q['rank'] or 'dense'} | {' / '.join(f'{a:.2f}' for a in q['test_accuracy'])} "
                         f"| {q['mean']:.2f} ± {q['std']:.2f} |")
    if result["note"]:
        lines += ["", result["note"]]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=CONFIGS, help=f"MODEL:LAYOUT,... (models: {', '.join(MODELS)}; "
                   f"default {CONFIGS}); empty: none (with --quality, accuracy only)")
    p.add_argument("--ranks", default="1,4", help="low-rank ranks beside dense (rank 0 always runs)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each rank first")
    p.add_argument("--batch", type=int, default=None, help="batch of every config (default 128 CNN, 8 ResNet)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    p.add_argument("--quality", action="store_true", help="also train the MNIST protocol at each rank")
    p.add_argument("--steps", type=int, default=1500, help="--quality: steps per run")
    p.add_argument("--seeds", default="0,1,2", help="--quality: seeds")
    p.add_argument("--data-dir", default=None, help="--quality: where MNIST is (default: the library's)")
    p.add_argument("--note", default="", help="a line for the markdown, e.g. 'shared machine, 2 other jobs'")
    p.add_argument("--out", default=None, help="path without suffix (default runs/bench/lowrank_<device>; "
                   "benchmarks/results/lowrank_cpu is the committed one)")
    return p


def main(argv: list[str] | None = None) -> dict:
    p = parser()
    args = p.parse_args(argv)
    try:
        configs = [parse_config(c) for c in args.configs.split(",") if c]
        ranks = [0] + [int(r) for r in args.ranks.split(",") if r and int(r) != 0]
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError as e:
        p.error(str(e))
    if any(r < 0 for r in ranks):
        p.error(f"--ranks takes integers >= 1, got {args.ranks!r}")
    for flag in ("rounds", "steps"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be >= 1")
    device = resolve_device(args.device)
    tag = "cpu" if device.type == "cpu" else device.type
    peak_method = ("torch.cuda.max_memory_allocated above memory_allocated before the step" if device.type == "cuda"
                   else "the profiler's allocation events (profile_memory=True): tensor bytes above those live "
                        "before the step, temporaries inside an op included")
    load = os.getloadavg()
    rows = [row for model, vendors in configs
            for row in bench_config(model, vendors, ranks, args.batch, args.rounds, args.warmup, device)]
    result = {"benchmark": "lowrank", "machine": machine_summary(), "device": str(device),
              "torch_threads": torch.get_num_threads(), "ranks": ranks, "rounds": args.rounds,
              "warmup": args.warmup, "peak_method": peak_method, "note": args.note, "rows": rows}
    if args.quality:
        result["quality"] = quality(ranks, seeds, args.steps, str(device), args.data_dir)
    result["load_average"] = ", ".join(f"{v:.1f}" for v in load)
    out = Path(args.out or RUNS / f"lowrank_{tag}")
    write_json(out.with_suffix(".json"), result)
    text = markdown(result)
    write_atomic(out.with_suffix(".md"), text)
    print(text)
    return result


if __name__ == "__main__":
    main()
