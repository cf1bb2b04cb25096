"""Step speed, side by side: our market step, a per-vendor loop, backprop, inference.

Every row of the table is timed in the same process on the same device:
CUDA events (or the host clock on the CPU) around each call, after warm-up,
median of the repeats. FLOPs come from torch's FlopCounterMode over one
call, so effective TFLOP/s is measured work over measured time. The market
step can be timed in several variants (`Variant`: formulation, precision,
channels-last, torch.compile mode, deltas cached or regenerated), each row
beside the others, and the seed-to-delta expansion (Philox) alone.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from marketplace.functional import path_losses
from marketplace.io import write_atomic
from marketplace.machine import cpu_name
from marketplace.market import Market, MarketOutput
from marketplace.models import beautiful_mnist
from marketplace.optim import V2
from marketplace.rng import uniform_pm1
from marketplace.vendors import Vendors, draw_vendors

ORIGINAL_MS = 88.0  # the original tinygrad V2 step: 16 vendors/spec, depth 3, batch 512, one H100


@dataclass(frozen=True)
class Variant:
    """One way to run the market step: "wide", "grouped/bf16", "wide/fp16/compile=max-autotune", ...

    Parts after the formulation, in any order: a precision (fp32, bf16, fp16),
    "nocl" (no channels-last), "compile" or "compile=MODE", "regen" (deltas
    regenerated from the seeds at each use instead of cached for the step).
    """

    formulation: str = "auto"
    precision: str = "auto"
    channels_last: bool | str = "auto"
    compile: bool | str = False
    cache_deltas: bool = True

    @classmethod
    def parse(cls, text: str) -> "Variant":
        from marketplace.layouts import FORMULATIONS

        head, *parts = text.strip().split("/")
        if head not in FORMULATIONS:
            raise ValueError(f"unknown formulation {head!r} in {text!r}; choose from {', '.join(FORMULATIONS)}")
        v = {"formulation": head}
        for part in parts:
            if part in ("fp32", "bf16", "fp16", "auto"):
                v["precision"] = part
            elif part == "nocl":
                v["channels_last"] = False
            elif part == "compile":
                v["compile"] = True
            elif part.startswith("compile="):
                v["compile"] = part.split("=", 1)[1]
            elif part == "regen":
                v["cache_deltas"] = False
            else:
                raise ValueError(f"unknown part {part!r} in variant {text!r} (precision, nocl, compile[=MODE], regen)")
        return cls(**v)


@dataclass
class Row:
    name: str
    vendors: int
    ms: float  # median per call
    flop: float  # per call
    images: int  # final products (market) or images (baselines) per call
    peak_mib: float | None
    startup_s: float  # construction to the first finished call
    variant: str = ""  # the market step's Variant, as written; "" for the default and the baselines
    minor_faults: float = 0.0  # median minor page faults per call (fresh memory touched)

    @property
    def tflops(self) -> float:
        return self.flop / (self.ms * 1e-3) / 1e12

    @property
    def products_per_s(self) -> float:
        return self.images / (self.ms * 1e-3)


def looped_evaluate(market: Market, x: torch.Tensor, vendors: Vendors) -> MarketOutput:
    """The naive reference: the same full-sampling market, one vendor at a time."""
    products, paths = x[None], torch.zeros(1, 0, dtype=torch.int64, device=x.device)
    for k, spec in enumerate(market.specs):
        layout, m = market.layouts[k], market.vendor_counts[k]
        base = market.flat_parameters(k)
        deltas = vendors.deltas(k, layout.numel, x.device)
        outs = []
        for j in range(m):
            params = layout.split(base + deltas[j])
            flat = products.reshape(-1, *products.shape[2:])
            outs.append(torch.func.functional_call(spec, params, (flat,)))
        upstream = products.shape[0]
        out = torch.stack(outs)  # [M, upstream * B, ...]
        products = out.reshape(m * upstream, x.shape[0], *out.shape[2:])
        paths = torch.cat([paths.repeat(m, 1), torch.arange(m, device=x.device).repeat_interleave(upstream)[:, None]], 1)
    return MarketOutput(products, paths)


def _timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int,
           faults: list[int] | None = None) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        if faults is not None:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return times


def _flops(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _start(make: Callable[[], Callable[[], object]], device: torch.device) -> tuple[Callable[[], object], float]:
    """Build the function and call it once: (the function, seconds from construction to its first result)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn = make()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return fn, time.perf_counter() - t0


def _measure(name: str, m: int, images: int, make: Callable[[], Callable[[], object]], device: torch.device,
             warmup: int, repeats: int, variant: str = "", flop: float | None = None) -> Row:
    """Start-up (construction to the first finished call), FLOPs (unless given), then the timed calls."""
    fn, startup = _start(make, device)
    flop = _flops(fn) if flop is None else flop
    faults: list[int] = []
    times = _timed(fn, device, warmup, repeats, faults)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return Row(name, m, statistics.median(times), flop, images, peak, startup, variant, statistics.median(faults))


def _measure_interleaved(name: str, m: int, images: int, makes: list, variants: list[str], device: torch.device,
                         warmup: int, repeats: int) -> list[Row]:
    """Like `_measure` for several variants of one function, timed round-robin.

    On a shared machine the load changes from minute to minute; taking
    turns call by call slows every variant alike, so their ratios hold.
    FLOPs are counted once (the variants compute the same function).
    """
    fns, startups, peaks = [], [], []
    for make in makes:
        fn, startup = _start(make, device)
        startups.append(startup)
        peaks.append(torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None)
        fns.append(fn)
    flop = _flops(fns[0])
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    faults: list[list[int]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            times[i] += _timed(fn, device, 0, 1, faults[i])
    return [Row(name, m, statistics.median(t), flop, images, peak, startup, variant, statistics.median(f))
            for t, f, peak, startup, variant in zip(times, faults, peaks, startups, variants)]


def bench_market(m: int, depth: int, batch: int, device: torch.device, warmup: int = 3, repeats: int = 10,
                 compile: bool = False, precision: str = "auto", loop: bool = True,
                 variants: list[str] | None = None, philox: bool = False, baselines: bool = True) -> list[Row]:
    """Rows for one vendor count: the V2 step (in each variant), the looped step, backprop SGD, inference.

    variants: market-step variants to time side by side (`Variant.parse`);
    None times the market as configured by `compile` and `precision`.
    philox: also time expanding every spec's deltas from the seeds alone.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    rows = []
    default = Variant(precision=precision, compile=compile)

    def market_step(looped: bool, variant: Variant = default):
        def make():
            torch.manual_seed(0)
            market = Market(beautiful_mnist(depth), m, precision=variant.precision, compile=variant.compile,
                            channels_last=variant.channels_last, formulation=variant.formulation).to(device)
            opt = V2(market, lr=0.1, cache_deltas=variant.cache_deltas)

            def step():
                out = looped_evaluate(market, x, opt.vendors) if looped else market.evaluate(x, opt.vendors)
                opt.step(path_losses(out.products, y), out.paths)
            return step
        return make

    paths = m**depth
    if variants is None:
        rows.append(_measure("market V2 step", m, paths * batch, market_step(False), device, warmup, repeats))
    if variants:
        makers = [market_step(False, Variant.parse(text)) for text in variants]
        rows += _measure_interleaved("market V2 step", m, paths * batch, makers, list(variants), device,
                                     warmup, repeats)
    if philox:
        rows.append(_measure("philox deltas", m, 0, lambda: _philox(m, depth, device), device, warmup, repeats))
    if loop:
        rows.append(_measure("per-vendor loop step", m, paths * batch, market_step(True), device,
                             max(1, warmup // 2), max(2, repeats // 3)))

    def backprop():
        torch.manual_seed(0)
        model = torch.nn.Sequential(*beautiful_mnist(1)).to(device)
        sgd = torch.optim.SGD(model.parameters(), lr=1e-3)

        def step():
            sgd.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            sgd.step()
        return step
    if not baselines:
        return rows
    rows.append(_measure("backprop SGD step", m, batch, backprop, device, warmup, repeats))

    def inference():
        torch.manual_seed(0)
        model = torch.nn.Sequential(*beautiful_mnist(1)).to(device)
        chunk = x.repeat(max(1, min(paths, 64)), 1, 1, 1)  # a batch big enough to fill the device
        amp = torch.bfloat16 if device.type == "cuda" and precision in ("auto", "bf16") else None

        @torch.no_grad()
        def step():
            with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                return model(chunk)
        return step
    rows.append(_measure("plain inference", m, batch * max(1, min(paths, 64)), inference, device, warmup, repeats))
    return rows


def _philox(m: int, depth: int, device: torch.device) -> Callable[[], object]:
    """Expand every spec's M deltas from fresh seeds, nothing else: the step's random-number cost."""
    sizes = [sum(p.numel() for p in spec.parameters()) for spec in beautiful_mnist(depth)]
    step = iter(range(10**9))

    def draw():
        vendors = draw_vendors(0, next(step), [m] * depth, [0.01] * depth)
        return [uniform_pm1(s.to(device), n) for s, n in zip(vendors.seeds, sizes)]
    return draw


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({cpu_name()}, {torch.get_num_threads()} threads)"


def to_json(rows: list[Row], config: dict) -> dict:
    return {"config": config, "rows": [{**asdict(r), "tflops": r.tflops, "products_per_s": r.products_per_s}
                                       for r in rows]}


def table(rows: list[Row]) -> str:
    """Markdown table with ratios against the first market step of the same vendor count and the original's 88 ms."""
    head = ("| what | vendors/spec | ms/step | GFLOP/step | TFLOP/s | products/s | peak MiB | start-up s | "
            "minor faults/step | ms vs market | ms vs original 88 ms |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    ours: dict[int, Row] = {}
    for r in rows:
        if r.name == "market V2 step":
            ours.setdefault(r.vendors, r)
    for r in rows:
        ratio = r.ms / ours[r.vendors].ms if r.vendors in ours else float("nan")
        peak = f"{r.peak_mib:.0f}" if r.peak_mib is not None else "-"
        name = f"{r.name} [{r.variant}]" if r.variant else r.name
        lines.append(f"| {name} | {r.vendors} | {r.ms:.2f} | {r.flop / 1e9:.1f} | {r.tflops:.3f} | "
                     f"{r.products_per_s:,.0f} | {peak} | {r.startup_s:.2f} | {r.minor_faults:,.0f} | "
                     f"{ratio:.2f}x | {r.ms / ORIGINAL_MS:.2f}x |")
    return "\n".join(lines)


def run(device: torch.device, vendors: list[int] | None = None, depth: int = 3, batch: int | None = None,
        repeats: int | None = None, precision: str = "auto", compile: bool = False, loop: bool = True,
        out: str | None = None, variants: list[str] | None = None, philox: bool = False,
        note: str = "") -> dict:
    """Benchmark each vendor count, print the table, write JSON and markdown; CPU gets smaller defaults.

    variants: market-step variants timed side by side (`Variant`); philox:
    add the delta expansion alone; note: a line for the markdown (e.g. that
    the machine was shared).
    """
    cuda = device.type == "cuda"
    vendors = vendors or ([4, 8, 16] if cuda else [2, 4])
    batch = batch or (512 if cuda else 64)
    repeats = repeats or (20 if cuda else 3)
    for text in variants or []:
        Variant.parse(text)  # refuse a bad variant before any timing
    rows = []
    for m in vendors:
        print(f"timing {m} vendors per spec, batch {batch} ...", file=sys.stderr, flush=True)  # minutes on a CPU
        rows += bench_market(m, depth, batch, device, warmup=3 if cuda else 1, repeats=repeats,
                             compile=compile, precision=precision, loop=loop, variants=variants, philox=philox)
    config = {"device": device_name(device), "torch": torch.__version__, "date": date.today().isoformat(),
              "depth": depth, "batch": batch, "vendors": vendors, "precision": precision,
              "compile": compile, "variants": variants, "command": " ".join(sys.argv), "note": note}
    result = to_json(rows, config)
    text = table(rows)
    print(f"{config['device']}, torch {config['torch']}, depth {depth}, batch {batch}\n{text}")
    path = Path(out or f"runs/bench/step_speed_{device.type}.json")  # never over the committed results
    write_atomic(path, json.dumps(result, indent=2))
    write_atomic(path.with_suffix(".md"),
               f"# Step speed: {config['device']}\n\n{config['date']}, torch {config['torch']}, depth {depth}, "
               f"batch {batch}, precision {precision}, compile {compile}, median of {repeats} repeats"
               f"{'. ' + note if note else ''}\n\n{text}\n")
    return result
