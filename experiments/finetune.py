"""Forward-only fine-tuning against backprop at equal wall time: how much of backprop's gain does V2 recover?

    OMP_NUM_THREADS=1 uv run python experiments/finetune.py                         # the study, runs/finetune
    OMP_NUM_THREADS=1 uv run python experiments/finetune.py --out results/finetune  # the committed run
    uv run python experiments/finetune.py --tiny --out /tmp/finetune                # the whole pipeline in seconds

Fine-tuning is where training without a backward pass looks most plausible:
the base is already good, the change it needs is small, and nothing has to
be stored for a backward pass. This measures it on one CPU thread.

Bases, trained by backprop (Adam) for --pretrain-steps and saved under --out
as safetensors with their settings: a ResNet-8 (models/resnet.py, GroupNorm,
4 specs: stem + block 1, block 2, block 3, head) on Fashion-MNIST classes
0-8 with ten outputs (class 9 is never seen: its output is only pushed
down), and a
`TransformerEncoder` classifier reading an MNIST image as 28 rows of 28
features (specs: row embedding with learned positions, each encoder layer,
mean-pool + LayerNorm + linear head) on all ten digits. A rerun reuses a
base made with the same settings, says so, and refuses one made with others.

Tasks, each from its base: `ten-classes` (all of Fashion-MNIST: the base
must learn class 9), `inverted` (classes 0-8 as 1 - x) and
`transformer-inverted` (MNIST digits as 1 - x). Inversion rather than a 90
degree rotation: the inverted image is a constant minus the original, so
through the first (linear) layer the response is a per-channel constant
minus the old one, and a small, early change can undo it; the base still
fails on it. A rotation needs new spatial features, which none of the
methods learns within minutes on a CPU, so it would say less about how
well each finds a change that exists.

Methods, each from a fresh copy of the base, each given the same
--seconds of training on one thread (evaluations are not counted), the
same batches by step (`training.batch_indices`): backprop (Adam, --adam-lr,
batch --batch), and V2 on a --vendors market (batch --market-batch, lr
--v2-lr, probe scale --probe-scale: the published V2 setting, not tuned for
fine-tuning) with dense vendors and with rank-1 and rank-4 vendors (the
transformer: dense and rank 1). Low rank factors only Linear, Conv2d
(groups=1) and Embedding weights; attention's projections live inside
`nn.MultiheadAttention`, which reads them itself, so they stay dense (the
JSON lists, per spec, the share of parameters that is factored). Under the
market's vmap, torch has no batching rule for CPU attention and falls back
to a loop (its warning is kept in the run's JSON).

Score: test accuracy on the first --test-images test images of the task's
classes, every --seconds / --evals seconds of training; gain = accuracy at
the end - the base's accuracy on the task; each forward-only method's
fraction of backprop's gain at the same time. Memory: the weights plus the
most tensor memory the first training step of a fresh copy holds above
them (gradients, Adam's moments, activations, the products of every path,
the vendors' draws), from the profiler's allocation events, as
benchmarks/lowrank.py measures a step on a CPU. Not the process RSS: that
would mix in torch itself, the data sets and whatever the allocator kept
from the previous method. The allocator keeps freed memory once the data
is loaded (`memory.reuse_freed_memory`, as `marketplace train` does on a
CPU), which makes market steps faster.

Writes --out/{finetune.json, finetune.md, finetune.png, README.md}, the
bases and runs/TASK--METHOD.json per finished (task, method): rerunning
the same command reads those back and runs only what is missing; a run
made with other settings is refused.

Duration with the defaults: about 25 minutes, extrapolated from 4-second
runs on a 2-core AMD EPYC shared with two other jobs: ~2 minutes for the
bases (1,000 Adam steps at ~75 ms for the ResNet, ~32 ms for the
transformer), then 11 runs of 120 s of training plus 10 evaluations each
(~0.75 s on 2,000 images for the ResNet, ~0.3 s for the transformer).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import DeviceType

from marketplace import V2, Market, path_losses
from marketplace import data as datasets
from marketplace.errors import MarketplaceError
from marketplace.io import atomic_path, write_atomic, write_json
from marketplace.machine import machine_name
from marketplace.memory import reuse_freed_memory
from marketplace.models.resnet import resnet_units, split_units
from marketplace.training import accuracy, batch_indices, load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class Task:
    base: str  # "resnet" or "transformer"
    dataset: str
    classes: tuple[int, ...]
    invert: bool
    methods: tuple[str, ...]
    title: str


TASKS: dict[str, Task] = {
    "ten-classes": Task("resnet", "fashion-mnist", tuple(range(10)), False,
                        ("backprop", "v2-dense", "v2-rank1", "v2-rank4"), "ResNet-8, Fashion-MNIST: all ten classes"),
    "inverted": Task("resnet", "fashion-mnist", tuple(range(9)), True,
                     ("backprop", "v2-dense", "v2-rank1", "v2-rank4"), "ResNet-8, Fashion-MNIST 0-8 inverted"),
    "transformer-inverted": Task("transformer", "mnist", tuple(range(10)), True,
                                 ("backprop", "v2-dense", "v2-rank1"), "Transformer, MNIST inverted"),
}
BASES = {"resnet": ("fashion-mnist", tuple(range(9))), "transformer": ("mnist", tuple(range(10)))}
TRANSFORMER = dict(d_model=64, heads=4, layers=2, feedforward=128)

FULL = dict(seconds=120.0, pretrain_steps=1000, batch=64, market_batch=32, vendors="4,4,4,4", evals=10,
            test_images=2000)
TINY = dict(seconds=0.05, pretrain_steps=2, batch=8, market_batch=4, vendors="2,2,2,2", evals=1, test_images=50)


# -- models ------------------------------------------------------------------

class RowEmbedding(nn.Module):
    """An image [B, 1, H, W] as H tokens: each row of W pixels projected to d_model, plus a learned position."""

    def __init__(self, width: int, rows: int, d_model: int):
        super().__init__()
        self.proj = nn.Linear(width, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(rows, d_model))

    def forward(self, x):
        return self.proj(x.reshape(x.shape[0], -1, x.shape[-1])) + self.pos


class PoolHead(nn.Module):
    """Mean over the tokens, LayerNorm, linear: [B, T, d_model] -> [B, classes]."""

    def __init__(self, d_model: int, classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, classes)

    def forward(self, x):
        return self.fc(self.norm(x.mean(dim=1)))


class RowTransformer(nn.Module):
    """A `TransformerEncoder` classifier over an image's rows; `specs()` cuts it at its layers."""

    def __init__(self, d_model: int, heads: int, layers: int, feedforward: int, classes: int = 10):
        super().__init__()
        self.embed = RowEmbedding(28, 28, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, feedforward, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = PoolHead(d_model, classes)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)))

    def specs(self) -> list[nn.Module]:
        return [self.embed, *self.encoder.layers, self.head]


def build_base(kind: str, seed: int) -> tuple[nn.Module, Callable[[], list[nn.Module]]]:
    """A fresh model of `kind` from `seed`, and a function giving its specs (which share its weights)."""
    torch.manual_seed(seed)
    if kind == "resnet":
        units = resnet_units("resnet8", 1, 10)
        return nn.Sequential(*units), lambda: [nn.Sequential(*group) for group in split_units(units, 4)]
    model = RowTransformer(**TRANSFORMER)
    return model, model.specs


# -- data --------------------------------------------------------------------

def invert_(x: torch.Tensor) -> torch.Tensor:
    """1 - pixels, in place, in the normalised units load_data gives: ((1 - u) - mean) / std, u = x * std + mean."""
    return x.neg_().add_((1.0 - 2.0 * datasets.MEAN) / datasets.STD)


class Data:
    """The train and test splits of each data set, loaded once (through `data.load_data`, looked up at call time)."""

    def __init__(self, data_dir: str | None):
        self.data_dir, self.cache = data_dir, {}

    def split(self, name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if (name, split) not in self.cache:
            self.cache[name, split] = datasets.load_data(name, split, self.data_dir, torch.device("cpu"))
        return self.cache[name, split]

    def task(self, dataset: str, classes: tuple[int, ...], inverted: bool, test_images: int) -> dict[str, torch.Tensor]:
        out = {}
        for split in ("train", "test"):
            x, y = self.split(dataset, split)
            keep = torch.isin(y, torch.tensor(classes))
            x, y = x[keep], y[keep]  # a copy of its own: inverted in place
            if split == "test":
                x, y = x[:test_images], y[:test_images]
            out[f"x_{split}"], out[f"y_{split}"] = (invert_(x) if inverted else x), y
        return out


# -- bases -------------------------------------------------------------------

def base_settings(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    dataset, classes = BASES[kind]
    arch = {"model": "resnet8 (GroupNorm)"} if kind == "resnet" else {"model": "transformer", **TRANSFORMER}
    return {**arch, "dataset": dataset, "classes": list(classes), "outputs": 10, "optimizer": "adam",
            "steps": args.pretrain_steps, "batch": args.batch, "lr": args.adam_lr, "seed": args.seed}


def differences(saved: dict, wanted: dict) -> list[str]:
    plain = lambda v: json.loads(json.dumps(v))
    return [f"{k}={plain(saved.get(k))!r}, not {plain(v)!r}"
            for k, v in wanted.items() if plain(saved.get(k)) != plain(v)]


def check_base(path: Path, settings: dict) -> dict | None:
    """The saved base's metadata when it matches `settings`; None when there is none; exits on a mismatch."""
    if not path.exists():
        return None
    try:
        meta = load_checkpoint(path).meta
    except MarketplaceError as e:
        sys.exit(f"error: {e}")
    diff = differences(meta.get("settings", {}), settings)
    if diff:
        sys.exit(f"error: {path} was made with {'; '.join(diff)}: use another --out, or delete it to make a new base")
    return meta


def make_base(kind: str, path: Path, settings: dict, data: Data, args) -> dict:
    """Train the base by Adam on its data set's classes and save it with its settings; its metadata."""
    dataset, classes = BASES[kind]
    d = data.task(dataset, classes, False, args.test_images)
    model, _ = build_base(kind, args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.adam_lr)
    model.train()
    start, every = time.perf_counter(), max(1, args.pretrain_steps // 5)
    for step in range(args.pretrain_steps):
        idx = batch_indices(args.seed, step, len(d["x_train"]), args.batch)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(d["x_train"][idx]), d["y_train"][idx]).backward()
        opt.step()
        if (step + 1) % every == 0:
            print(f"{kind} base: {step + 1}/{args.pretrain_steps} Adam steps, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    acc = accuracy(model, d["x_test"], d["y_test"], batch=500)[0]
    meta = {"settings": settings, "seconds": round(seconds, 2), "test_accuracy": acc, "test_images": len(d["x_test"])}
    save_checkpoint(path, model.state_dict(), {}, meta)
    print(f"{kind} base: {acc:.2f}% on {len(d['x_test'])} test images of {dataset} {describe(classes)} "
          f"after {args.pretrain_steps} Adam steps ({seconds:.0f} s); saved {path}", flush=True)
    return meta


def load_specs(kind: str, path: Path, seed: int) -> list[nn.Module]:
    model, specs = build_base(kind, seed)
    model.load_state_dict(load_checkpoint(path).model)
    return specs()


def describe(classes) -> str:
    classes = list(classes)
    contiguous = classes == list(range(classes[0], classes[-1] + 1))
    return f"classes {classes[0]}-{classes[-1]}" if contiguous else f"classes {classes}"


# -- one method on one task ----------------------------------------------------

def rank_of(method: str) -> int | None:
    """None for backprop, 0 for dense vendors, r for rank-r vendors."""
    if method == "backprop":
        return None
    return 0 if method == "v2-dense" else int(method.removeprefix("v2-rank"))


def run_settings(task: str, method: str, base: dict, args) -> dict[str, Any]:
    common = {"task": task, "method": method, "seconds": args.seconds, "evals": args.evals,
              "test_images": args.test_images, "seed": args.seed, "threads": args.threads, "base": base}
    if method == "backprop":
        return {**common, "optimizer": "adam", "lr": args.adam_lr, "batch": args.batch}
    return {**common, "optimizer": "v2", "lr": args.v2_lr, "probe_scale": args.probe_scale, "batch": args.market_batch,
            "vendors": args.vendor_counts, "rank": rank_of(method)}


def build_method(method: str, specs: list[nn.Module], args) -> tuple[Callable, nn.Module, dict]:
    """(step(x, y), the model to evaluate, what to record about it) for a fresh copy of the base."""
    rank = rank_of(method)
    if rank is None:
        model = nn.Sequential(*specs).train()
        opt = torch.optim.Adam(model.parameters(), lr=args.adam_lr)

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        return step, model, {}
    market = Market(specs, vendors=args.vendor_counts, rank=rank)
    opt = V2(market, lr=args.v2_lr, probe_scale=args.probe_scale, seed=args.seed)

    def step(x, y):
        out = market.evaluate(x, opt.vendors)
        opt.step(path_losses(out.products, y), out.paths)

    return step, market, {"paths": market.num_paths, "lowrank": lowrank_coverage(market)}


def lowrank_coverage(market: Market) -> list[dict] | None:
    """Per spec: the share of parameters in factored weights, and the matrices left dense-perturbed."""
    if not market.rank:
        return None
    out = []
    for spec, layout, plan in zip(market.specs, market.layouts, market.lowrank_plans):
        sizes = {n: math.prod(s) for n, s in zip(layout.names, layout.shapes)}
        factored = sum(sizes[n] for n in plan.ranks)
        dense = [n for n, s in zip(layout.names, layout.shapes) if len(s) >= 2 and n not in plan.ranks]
        out.append({"parameters": layout.numel, "factored": round(factored / max(1, layout.numel), 3),
                    "dense_matrices": dense})
    return out


@contextmanager
def native_stderr_silenced():
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


def step_peak_bytes(fn: Callable[[], None]) -> tuple[int, list[str]]:
    """The most tensor bytes held above the start while fn runs, and the warnings it raised.

    The running sum of the profiler's CPU allocation and free events, in
    time order: what benchmarks/lowrank.py reads, but from the raw events
    (a temporary inside one op counts too, and no per-op table is built).
    """
    with native_stderr_silenced(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.autograd.profiler.profile(profile_memory=True, use_kineto=False) as prof:
            fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    messages = sorted({str(w.message).splitlines()[0] for w in caught})
    for message in messages:  # said once here, kept in the run's JSON: not again at every timed step
        warnings.filterwarnings("ignore", message=re.escape(message))
    return peak, messages


def finetune(task: str, method: str, kind: str, base_path: Path, d: dict, before: float, args) -> dict[str, Any]:
    """Train a fresh copy of the base with `method` for --seconds of steps; its curve and memory."""
    x, y, xt, yt = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    rank = rank_of(method)
    batch = args.batch if rank is None else args.market_batch
    first = batch_indices(args.seed, 0, len(x), batch)
    probe_step, probe_model, _ = build_method(method, load_specs(kind, base_path, args.seed), args)
    weights = sum(p.numel() * p.element_size() for p in probe_model.parameters())
    # One step of a throwaway copy, profiled: its memory, and a warm-up (one-time imports and caches are
    # not charged to the budget).
    step_bytes, caught = step_peak_bytes(lambda: probe_step(x[first], y[first]))
    for w in caught:
        print(f"[{task}] {method}: {w}", flush=True)
    del probe_step, probe_model

    step, model, extra = build_method(method, load_specs(kind, base_path, args.seed), args)
    curve = [{"seconds": 0.0, "steps": 0, "accuracy": before}]
    seconds, steps, every = 0.0, 0, args.seconds / args.evals
    next_eval, eval_seconds = every, 0.0
    while steps == 0 or seconds < args.seconds:
        idx = batch_indices(args.seed, steps, len(x), batch)
        start = time.perf_counter()
        step(x[idx], y[idx])
        seconds += time.perf_counter() - start
        steps += 1
        if seconds >= next_eval or seconds >= args.seconds:
            start = time.perf_counter()
            acc = accuracy(model, xt, yt, batch=500)[0]
            eval_seconds += time.perf_counter() - start
            curve.append({"seconds": round(seconds, 3), "steps": steps, "accuracy": acc})
            print(f"[{task}] {method}: {seconds:.1f}/{args.seconds:g} s, {steps} steps, {acc:.2f}%", flush=True)
            while next_eval <= seconds:
                next_eval += every
    return {"task": task, "method": method, "before": before, "after": curve[-1]["accuracy"], "steps": steps,
            "seconds": round(seconds, 3), "eval_seconds": round(eval_seconds, 3), "batch": batch,
            "weights_mb": weights / 2**20, "step_peak_mb": step_bytes / 2**20,
            "peak_mb": (weights + step_bytes) / 2**20, "warnings": caught, "curve": curve, **extra}


# -- the study ---------------------------------------------------------------

def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/finetune", help="the bases, runs and report (results/ only when given)")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of: {', '.join(TASKS)}")
    p.add_argument("--methods", default=None, help="comma-separated subset of each task's methods (default: all)")
    p.add_argument("--seconds", type=float, default=None,
                   help=f"training seconds per method (default {FULL['seconds']:g})")
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help=f"Adam steps of each base (default {FULL['pretrain_steps']})")
    p.add_argument("--batch", type=int, default=None,
                   help=f"backprop's batch, bases and fine-tuning (default {FULL['batch']})")
    p.add_argument("--market-batch", type=int, default=None, help=f"V2's batch (default {FULL['market_batch']})")
    p.add_argument("--vendors", default=None, help=f"vendors per spec, 4 specs (default {FULL['vendors']})")
    p.add_argument("--adam-lr", type=float, default=1e-3)
    p.add_argument("--v2-lr", type=float, default=0.1)
    p.add_argument("--probe-scale", type=float, default=0.1)
    p.add_argument("--evals", type=int, default=None, help=f"evaluations per method (default {FULL['evals']})")
    p.add_argument("--test-images", type=int, default=None, help=f"first N test images of the task's classes "
                                                                  f"(default {FULL['test_images']})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tiny", action="store_true", help="tiny sizes for a smoke test (the defaults above become "
                                                       + ", ".join(f"{k}={v}" for k, v in TINY.items()) + ")")
    args = p.parse_args(argv)
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.task_names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.task_names if t not in TASKS]
    if unknown or not args.task_names:
        p.error(f"unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    every_method = {m for t in TASKS.values() for m in t.methods}
    args.method_names = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.method_names is not None and (set(args.method_names) - every_method or not args.method_names):
        p.error(f"unknown methods {sorted(set(args.method_names) - every_method)}; "
                f"choose from {', '.join(sorted(every_method))}")
    try:
        args.vendor_counts = [int(v) for v in args.vendors.split(",")]
    except ValueError:
        p.error(f"--vendors takes comma-separated integers, got {args.vendors!r}")
    if len(args.vendor_counts) != 4 or min(args.vendor_counts) < 1:
        p.error(f"--vendors needs 4 positive counts (both models have 4 specs), got {args.vendors!r}")
    if args.seconds <= 0 or args.evals < 1 or args.pretrain_steps < 0:
        p.error("--seconds must be > 0, --evals >= 1 and --pretrain-steps >= 0")
    given = sys.argv[1:] if argv is None else argv
    args.command = shlex.join(["uv", "run", "python", "experiments/finetune.py", *given])
    return args


def plan(args) -> list[tuple[str, str]]:
    return [(t, m) for t in args.task_names for m in TASKS[t].methods
            if args.method_names is None or m in args.method_names]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    todo = plan(args)
    kinds = sorted({TASKS[t].base for t, _ in todo})
    bases = {k: base_settings(k, args) for k in kinds}
    paths = {k: out / f"{k}-base.safetensors" for k in kinds}
    metas = {k: check_base(paths[k], bases[k]) for k in kinds}  # every refusal before any training
    done: dict[tuple[str, str], dict] = {}
    for task, method in todo:
        path = out / "runs" / f"{task}--{method}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            diff = differences(saved["settings"], run_settings(task, method, bases[TASKS[task].base], args))
            if diff:
                sys.exit(f"error: {path} was run with {'; '.join(diff)}: use another --out, or delete it to rerun")
            done[task, method] = saved

    data = Data(args.data_dir)
    for name in sorted({TASKS[t].dataset for t, _ in todo} | {BASES[k][0] for k in kinds}):
        data.split(name, "train"), data.split(name, "test")
    reuse_freed_memory()  # after loading: the loader's temporaries need not stay in the process
    for kind in kinds:
        if metas[kind] is None:
            metas[kind] = make_base(kind, paths[kind], bases[kind], data, args)
        else:
            print(f"{kind} base: reusing {paths[kind]} ({metas[kind]['test_accuracy']:.2f}% on its test images, "
                  f"made with the same settings)", flush=True)
    for task in args.task_names:
        spec = TASKS[task]
        methods = [m for t, m in todo if t == task]
        if all((task, m) in done for m in methods):
            for m in methods:
                print(f"[{task}] {m}: read back ({done[task, m]['result']['after']:.2f}%)", flush=True)
            continue
        d = data.task(spec.dataset, spec.classes, spec.invert, args.test_images)
        base_model = nn.Sequential(*load_specs(spec.base, paths[spec.base], args.seed))
        before = accuracy(base_model, d["x_test"], d["y_test"], batch=500)[0]
        print(f"[{task}] base: {before:.2f}% on {len(d['x_test'])} test images", flush=True)
        for method in methods:
            if (task, method) in done:
                print(f"[{task}] {method}: read back ({done[task, method]['result']['after']:.2f}%)", flush=True)
                continue
            result = finetune(task, method, spec.base, paths[spec.base], d, before, args)
            record = {"settings": run_settings(task, method, bases[spec.base], args), "result": result}
            write_json(out / "runs" / f"{task}--{method}.json", record, indent=1)
            done[task, method] = record
            write_report(out, args, metas, [done[k] for k in todo if k in done], plot=False)
    return write_report(out, args, metas, [done[k] for k in todo], plot=True)


def score(rows: list[dict]) -> None:
    """Add gain and the fraction of backprop's gain (same task, same seconds) to each result."""
    backprop = {r["task"]: r for r in rows if r["method"] == "backprop"}
    for r in rows:
        r["gain"] = r["after"] - r["before"]
        bp = backprop.get(r["task"])
        bp_gain = bp["after"] - bp["before"] if bp else None
        r["fraction_of_backprop_gain"] = r["gain"] / bp_gain if bp_gain and bp_gain > 0 else None


def write_report(out: Path, args, metas: dict, records: list[dict], plot: bool) -> dict[str, Any]:
    rows = [dict(r["result"]) for r in records]
    score(rows)
    report = {
        "machine": machine_name(torch.device("cpu")), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "command": args.command,
        "settings": {k: v for k, v in vars(args).items() if k not in ("command", "task_names", "method_names")},
        "bases": metas, "runs": rows,
    }
    write_json(out / "finetune.json", report, indent=1)
    lines = [
        f"# Fine-tuning: forward-only V2 against backprop at {args.seconds:g} s of training each",
        "",
        f"Machine: {report['machine']}; torch {torch.__version__}. Accuracy on the first {args.test_images} test "
        "images of each task's classes; seconds count training steps only. Backprop: Adam lr "
        f"{args.adam_lr:g}, batch {args.batch}. V2: {'x'.join(map(str, args.vendor_counts))} market, batch "
        f"{args.market_batch}, lr {args.v2_lr:g}, probe scale {args.probe_scale:g}. Gain: after - before; "
        "fraction: of backprop's gain on the same task. Peak MB: weights + the most tensor memory the first "
        "training step holds above them (the profiler's allocation events).",
        "",
        "| task | method | steps | before | after | gain | fraction of backprop's gain | peak MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        frac = "-" if r["method"] == "backprop" else (
            "n/a" if r["fraction_of_backprop_gain"] is None else f"{r['fraction_of_backprop_gain']:.2f}")
        lines.append(f"| {r['task']} | {r['method']} | {r['steps']} | {r['before']:.2f}% | {r['after']:.2f}% | "
                     f"{r['gain']:+.2f} | {frac} | {r['peak_mb']:.1f} |")
    bases = "; ".join(f"{k}: {m['test_accuracy']:.2f}% after {m['settings']['steps']} Adam steps "
                      f"({m['seconds']:.0f} s)" for k, m in metas.items() if m)
    lines += ["", f"Bases ({bases}).", "", "Command (rerun it to resume):", "",
              f"    OMP_NUM_THREADS=1 {args.command}", ""]
    write_atomic(out / "finetune.md", "\n".join(lines))
    write_atomic(out / "README.md", "\n".join([
        "# Forward-only fine-tuning study", "",
        "Made by `experiments/finetune.py` (its docstring says what is measured and why):", "",
        f"    OMP_NUM_THREADS=1 {args.command}", "",
        "The same command resumes: finished (task, method) runs are read back from `runs/`, the bases "
        "(`*-base.safetensors`) are reused. `finetune.md`: the table; `finetune.json`: every curve point and the "
        "settings; `finetune.png`: accuracy against training seconds.", ""]))
    if plot:
        plot_curves(out / "finetune.png", rows, args)
    return report


def plot_curves(path: Path, rows: list[dict], args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in rows if r["task"] == task):
            ax.plot([p["seconds"] for p in r["curve"]], [p["accuracy"] for p in r["curve"]], marker=".",
                    label=r["method"])
        ax.axhline(next(r["before"] for r in rows if r["task"] == task), color="grey", lw=0.8, ls="--")
        ax.set_title(TASKS[task].title, fontsize=9)
        ax.set_xlabel("training seconds (one thread)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"test accuracy % (first {args.test_images})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
