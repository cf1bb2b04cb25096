"""The GPU suite: every GPU figure in one run under a wall-time budget.

Parts run in order of priority, each only if its estimated time fits the
wall-time budget that is left (else it is skipped, saying so); training
runs also stop at the budget. After every part the JSON and markdown are
rewritten atomically, so a call cut off at its limit still leaves results.
`benchmarks/gpu_suite.py` is the command; `--size tiny` runs the same code at
toy sizes on a CPU in seconds, which is how it is tested.

Imports only what the GPU machine's own Python has (torch, numpy, rich, ...):
no MLflow, no FastAPI, no platformdirs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from marketplace.io import write_atomic
from marketplace.machine import machine_name, machine_summary

from .speed import Row, bench_market, table
from .suite_report import markdown, summary_table
from .suite_training import TrainingParts


@dataclass(frozen=True)
class SuiteSize:
    """How big each part is; FULL for the GPU, TINY for a CPU check of the whole suite."""

    name: str
    vendors: tuple[int, ...]  # step-speed table: vendor counts per spec
    batch: int
    variants: tuple[str, ...]  # market-step variants, timed side by side
    compiled: tuple[str, ...]  # variants with torch.compile: timed last, they compile for minutes
    repeats: int
    train_vendors: int  # the V2 run (the articles' 8x8x8)
    train_steps: int
    eval_every: int
    wide_vendors: int  # the second V2 run "if the step allows" (16x16x16)
    backprop_steps: int
    continual_steps: int
    continual_long: int  # run too if the budget allows
    serve_batches: tuple[int, ...]
    eval_samples: int = 10_000
    continual_cap_s: float = 100.0  # seconds each continual experiment may take (fewer steps if slower)
    warmup: int = 2  # untimed calls before the timed repeats
    goal_accuracy: float = 98.0  # the default trainer's run: the time to this test accuracy ...
    goal_s: float = 60.0  # ... within this much training, past train_steps if the step is fast
    goal_eval_every: int = 100  # its evaluations (all eval_samples test images)
    sweep_lrs: tuple[float, ...] = (0.1, 0.3)  # the default trainer's rate at this scale, beside lr 0.15


FULL = SuiteSize("full", (8, 16), 512,
            ("vmap", "grouped", "wide", "vmap/fp32", "grouped/fp32", "wide/fp32", "wide/fp16", "wide/nocl",
             "wide/regen"),
            ("wide/compile", "wide/compile=reduce-overhead", "wide/compile=max-autotune"),
            10, 8, 2000, 500, 16, 2000, 20_000, 100_000, (256, 512, 4096))
TINY = SuiteSize("tiny", (2,), 2, ("vmap", "grouped", "wide"), (), 1, 2, 4, 2, 3, 2, 2, 0, (8,), eval_samples=100,
            warmup=0, goal_accuracy=0.0, goal_s=0.0, goal_eval_every=2, sweep_lrs=(0.3,))
SIZES = {"full": FULL, "tiny": TINY}


@dataclass
class Suite(TrainingParts):
    """Runs the parts under one wall-time budget and keeps the results on disk as it goes."""

    size: SuiteSize
    out_dirs: list[Path]
    budget_s: float
    device: torch.device
    data_dir: str | None = None
    skip: tuple[str, ...] = ()
    results: dict[str, Any] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.start = time.perf_counter()
        self.results = {"device": machine_name(self.device), "machine": machine_summary(),
                        "torch": torch.__version__, "size": self.size.name, "budget_s": self.budget_s,
                        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "command": " ".join(sys.argv), "parts": {}}

    # -- bookkeeping -----------------------------------------------------------

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def log(self, text: str) -> None:
        stamp = f"[{time.perf_counter() - self.start:7.1f}s]"
        print(f"{stamp} {text}", flush=True)
        self.log_lines.append(f"{stamp} {text}")

    def part(self, name: str, estimate_s: float, fn: Callable[[], dict]) -> dict | None:
        """Run one part if it fits the budget; record its result, error or reason for skipping."""
        if name in self.skip:
            return self._record(name, {"status": "skipped", "reason": "--skip"})
        if estimate_s > self.left():
            reason = f"needs ~{estimate_s:.0f} s, {max(0.0, self.left()):.0f} s of the budget left"
            self.log(f"{name}: skipped ({reason})")
            return self._record(name, {"status": "skipped", "reason": reason})
        self.log(f"{name}: start (estimate {estimate_s:.0f} s, {self.left():.0f} s left)")
        t0 = time.perf_counter()
        try:
            result = {"status": "ok", **fn()}
        except Exception as e:  # one broken part must not cost the others their figures
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            result = {"status": "error", "error": f"{type(e).__name__}: {first}"}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        self.log(f"{name}: {result['status']} in {result['seconds']} s")
        return self._record(name, result)

    def _record(self, name: str, result: dict) -> dict:
        self.results["parts"][name] = result
        self.write()
        return result

    def write(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        text, md = json.dumps(self.results, indent=2, default=str), markdown(self.results)
        for d in self.out_dirs:
            write_atomic(d / "gpu_suite.json", text)
            write_atomic(d / "gpu_suite.md", md)
            write_atomic(d / "gpu_suite.log", "\n".join(self.log_lines) + "\n")

    # -- the parts ---------------------------------------------------------------

    def cuda_tests(self) -> dict:
        """`pytest -m cuda`: Philox bits CUDA == CPU, fast paths near fp32, a short CUDA training run."""
        # a test module that needs a package the GPU machine lacks must not stop the CUDA tests of the others
        cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q", "-rs",
               "--continue-on-collection-errors", "tests"]
        src = str(Path(__file__).resolve().parents[2])  # the package's own source, whatever PYTHONPATH says
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(src).parent,
                                 timeout=max(30.0, min(150.0, self.left())))
            text, code = out.stdout + out.stderr, out.returncode
        except subprocess.TimeoutExpired as e:
            text, code = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), -1
        for d in self.out_dirs:
            write_atomic(d / "pytest_cuda.log", text)
        lines = [line for line in text.strip().splitlines() if line.strip()]
        summary = lines[-1] if lines else ""
        # collection errors (modules needing fastapi, httpx, ...) end the run with code 1 but run no CUDA test
        return {"returncode": code, "summary": summary, "passed": " passed" in summary and " failed" not in summary}

    def step_speed(self, variants: tuple[str, ...], philox: bool, baselines: bool) -> dict:
        """The step-speed table, one variant at a time, so that one that fails (out of memory, say) costs only its row."""
        rows: list[Row] = []
        failed: dict[str, str] = {}
        for m in self.size.vendors:
            runs = [(v, dict(variants=[v], loop=False, philox=False, baselines=False)) for v in variants]
            if philox or baselines:
                runs.append(("baselines", dict(variants=[], loop=baselines and m == self.size.vendors[0],
                                               philox=philox, baselines=baselines)))
            for name, kwargs in runs:
                if self.left() < 10:
                    failed[f"{name} @ {m}"] = "budget spent"
                    continue
                try:
                    rows += bench_market(m, 3, self.size.batch, self.device, warmup=self.size.warmup,
                                         repeats=self.size.repeats, **kwargs)
                except Exception as e:  # noqa: BLE001 - the row is reported as failed, the table goes on
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    failed[f"{name} @ {m}"] = f"{type(e).__name__}: {first[:200]}"
                    self.log(f"step_speed {name} @ {m} vendors failed: {failed[f'{name} @ {m}']}")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        self.log("\n" + table(rows))
        return {"batch": self.size.batch, "table": table(rows), "failed": failed,
                "rows": [{**r.__dict__, "tflops": r.tflops, "products_per_s": r.products_per_s} for r in rows]}

    def serving(self) -> dict:
        from marketplace import Market, draw_vendors
        from marketplace.continual import serve
        from marketplace.models import beautiful_mnist

        torch.manual_seed(0)
        market = Market(beautiful_mnist(3), 4).to(self.device)
        vendors = draw_vendors(0, 0, market.vendor_counts, [0.01] * 3)
        out = {}
        for b in self.size.serve_batches:
            x = torch.randn(b, 1, 28, 28, device=self.device)
            g = torch.Generator().manual_seed(0)
            variants = {"plain": lambda: market(x), "iid": lambda: serve(market, vendors, x, generator=g),
                        "balanced": lambda: serve(market, vendors, x, generator=g, balanced=True)}
            with torch.no_grad():
                times = {k: _times(fn, self.device, self.size.warmup, self.size.repeats) for k, fn in variants.items()}
            rate = {k: b / (statistics.median(t) / 1e3) for k, t in times.items()}
            out[str(b)] = {"examples_per_s": rate, "vs_plain": {k: rate[k] / rate["plain"] for k in rate}}
        return out

    def philox(self) -> dict:
        """The delta expansion alone at the largest vendor count: eager int64 ops, and compiled into one kernel on CUDA."""
        from marketplace.models import beautiful_mnist
        from marketplace.rng import derive_seeds, random_bits, uniform_pm1

        m = max(self.size.vendors)
        sizes = [sum(p.numel() for p in spec.parameters()) for spec in beautiful_mnist(3)]
        seeds = derive_seeds(1, 2, count=m).to(self.device)  # all nonzero: every vendor draws

        def units(s: torch.Tensor, n: int) -> torch.Tensor:  # uniform_pm1 without the leader's branch
            k = random_bits(s, 0, n) >> 9
            return (2 * k + 1 - (1 << 23)).to(torch.float32) * (2.0**-23)

        eager = lambda: [uniform_pm1(seeds, n) for n in sizes]
        out = {"vendors": m, "values": m * sum(sizes),
               "eager_ms": statistics.median(_times(eager, self.device, self.size.warmup, self.size.repeats))}
        if self.device.type == "cuda":
            compiled = torch.compile(units, dynamic=False)
            out["compiled_equal"] = all(torch.equal(compiled(seeds, n), e) for n, e in zip(sizes, eager()))
            out["compiled_ms"] = statistics.median(_times(lambda: [compiled(seeds, n) for n in sizes], self.device,
                                                          self.size.warmup, self.size.repeats))
        return out

def _times(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    from .speed import _timed

    return _timed(fn, device, warmup, max(1, repeats))


def run_suite(suite: Suite, work: Path) -> dict:
    """Every part, in order of priority; returns the results (also on disk)."""
    s, cuda = suite.size, suite.device.type == "cuda"
    work.mkdir(parents=True, exist_ok=True)
    digits, no9 = work / f"v2_{s.train_vendors}_digits.safetensors", work / f"v2_{s.train_vendors}_no9.safetensors"
    suite.log(f"{suite.results['device']} | {suite.results['machine']} | size {s.name} | budget {suite.budget_s:.0f} s")
    suite.part("cuda_tests", 60 if cuda else 20, suite.cuda_tests)
    suite.part("step_speed", 20 * len(s.vendors) + 5, lambda: suite.step_speed(s.variants, True, True))
    ms = _market_ms(suite.results, s.train_vendors)
    per_step = (ms or 50.0) / 1e3 + 0.002  # + data indexing and the update's host work
    suite.part("v2_train", s.train_steps * per_step * 1.1 + 15, lambda: suite.train_v2(s.train_vendors, digits))
    step_s = suite.results["parts"]["v2_train"].get("ms_per_step", 1e3 * per_step) / 1e3
    default_s = max(s.goal_s, s.train_steps * step_s) * 1.1 + 15
    suite.part("v2_default", default_s, lambda: suite.train_default(s.train_vendors, "constant", step_s))
    suite.part("backprop", 2 * s.backprop_steps * 0.006 + 20, suite.backprop)
    suite.part("serving", 15, suite.serving)
    suite.part("philox", 30 if cuda else 5, suite.philox)
    if _ok(suite, "v2_train"):
        suite.part("continual_dress", 40, lambda: suite.continual("dress", digits, s.continual_steps, s.continual_cap_s))
    suite.part("v2_pretrain_no9", s.train_steps * per_step * 1.1 + 15,
               lambda: suite.train_v2(s.train_vendors, no9, exclude=(9,)))
    if _ok(suite, "v2_pretrain_no9"):
        suite.part("continual_nine", 40, lambda: suite.continual("nine", no9, s.continual_steps, s.continual_cap_s))
    suite.part("v2_default_cosine", s.train_steps * step_s * 1.1 + 15,
               lambda: suite.train_default(s.train_vendors, "cosine", step_s))
    wide_ms = _market_ms(suite.results, s.wide_vendors)
    wide_est = s.train_steps * ((wide_ms or 8 * (ms or 50.0)) / 1e3 + 0.002) * 1.1 + 15
    suite.part("v2_train_wide", wide_est,
               lambda: suite.train_v2(s.wide_vendors, work / f"v2_{s.wide_vendors}.safetensors"))
    if s.compiled:
        suite.part("step_speed_compiled", 120, lambda: suite.step_speed(s.compiled, False, False))
    suite.part("v2_sweep", 2 * len(s.sweep_lrs) * (s.train_steps * step_s * 1.1 + 10),
               lambda: suite.sweep_default(s.train_vendors, step_s))
    if s.continual_long and _ok(suite, "continual_dress"):
        suite.part("continual_dress_long", s.continual_long * 0.004 + 30,
                   lambda: suite.continual("dress", digits, s.continual_long, suite.left()))
    suite.log("done\n" + summary_table(suite.results))
    suite.write()
    return suite.results


def _ok(suite: Suite, name: str) -> bool:
    return suite.results["parts"].get(name, {}).get("status") == "ok"


def _market_ms(results: dict, m: int) -> float | None:
    """The default variant's ms/step for m vendors from the step-speed table, if it ran."""
    rows = results["parts"].get("step_speed", {}).get("rows", [])
    ms = [r["ms"] for r in rows if r["name"] == "market V2 step" and r["vendors"] == m]
    return min(ms) if ms else None


def output_dirs(out: str | None, size: SuiteSize, device: torch.device) -> list[Path]:
    """Where results go: --out (else $OUT, else runs/gpu_suite_<size>_<device>, never the committed results)."""
    chosen = out or os.environ.get("OUT")
    return [Path(chosen)] if chosen else [Path("runs") / f"gpu_suite_{size.name}_{device.type}"]
