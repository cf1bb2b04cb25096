"""The timed runs of the fine-tuning study: backprop or V2 from a fresh copy of a base, and each one's memory.

Every method gets the same seconds of training steps (evaluations not
counted) on the same batches by step, so the comparison is at equal wall
time; memory is read from the profiler's allocation events of one step,
not the process RSS, which would mix in torch, the data and earlier methods.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from marketplace import V2, Market, path_losses
from marketplace.diagnostics import peak_tensor_bytes
from marketplace.optim import ForwardGradient, TorchMarketOptimizer
from marketplace.optim.checks import check_per_spec
from marketplace.specs import freeze_all_but_biases_norms_and_head
from marketplace.training import accuracy, batch_indices

from experiments.lib.finetune_models import TASKS, load_specs


PARTIAL = "v2-partial"  # dense vendors over the biases, the norms and the head only; the rest frozen
ENDS = "v2-ends"  # the same and the first layer, where a change of the input meets the model
TAIL = "v2-tail"  # the same and the whole spec before the head, where a new class's features form
PARTIAL_ADAM = "v2-partial-adam"  # the partial market's estimate stepped by Adam (the torch.optim bridge)
BACKPROP_PARTIAL = "backprop-partial"  # Adam on the partial market's numbers only: what those numbers can hold
TRAINABLE = {PARTIAL: "biases, norms and the head", ENDS: "biases, norms, the first layer and the head",
             TAIL: "biases, norms, the spec before the head and the head",
             PARTIAL_ADAM: "biases, norms and the head", BACKPROP_PARTIAL: "biases, norms and the head"}


def rank_of(method: str) -> int | None:
    """None for backprop, 0 for dense vendors, r for rank-r vendors."""
    if method in ("backprop", BACKPROP_PARTIAL):
        return None
    return 0 if method in ("v2-dense", *TRAINABLE) else int(method.removeprefix("v2-rank"))


def v2_rate(method: str, args) -> float | list[float]:
    """V2's starting rate for the method: one for every spec, or one per spec."""
    rate = args.partial_lr if method in TRAINABLE else args.v2_lr
    return rate[0] if isinstance(rate, (list, tuple)) and len(rate) == 1 else rate


def resnet_specs(args) -> int:
    """How many specs the ResNet is cut into (--resnet-specs; 4 for settings saved before it)."""
    return getattr(args, "resnet_specs", 4)


def adam_rate(method: str, args) -> float:
    """Backprop's Adam rate: --partial-adam-lr for backprop-partial when given, else --adam-lr."""
    partial = getattr(args, "partial_adam_lr", None)
    return partial if method == BACKPROP_PARTIAL and partial is not None else args.adam_lr


def run_settings(task: str, method: str, base: dict, args) -> dict[str, Any]:
    common = {"task": task, "method": method, "seconds": args.seconds, "evals": args.evals,
              "test_images": args.test_images, "seed": args.seed, "threads": args.threads, "base": base}
    if args.lr_decay != 1.0:  # absent when constant, so runs saved before the setting still match
        common["lr_decay"] = args.lr_decay
    if resnet_specs(args) != 4 and TASKS[task].base == "resnet":  # likewise absent at the usual cut
        common["resnet_specs"] = resnet_specs(args)
    if method == "backprop":
        return {**common, "optimizer": "adam", "lr": args.adam_lr, "batch": args.batch}
    if method == BACKPROP_PARTIAL:
        return {**common, "optimizer": "adam", "lr": adam_rate(method, args), "batch": args.batch,
                "trainable": TRAINABLE[method]}
    if method == PARTIAL_ADAM:
        return {**common, "optimizer": "v2-estimate+adam", "lr": args.estimate_adam_lr,
                "probe_width": probe_width(method, args), "batch": args.market_batch, "vendors": args.vendor_counts,
                "rank": 0, "trainable": TRAINABLE[method]}
    return {**common, "optimizer": "v2", "lr": v2_rate(method, args), "probe_scale": args.probe_scale,
            "batch": args.market_batch, "vendors": args.vendor_counts, "rank": rank_of(method),
            **({"trainable": TRAINABLE[method]} if method in TRAINABLE else {})}


def probe_width(method: str, args) -> list[float]:
    """The widths V2 would start with (its rate x the probe scale): Adam's rate is no step length to follow."""
    rates = check_per_spec("rate", v2_rate(method, args), len(args.vendor_counts), "rates")
    return [r * args.probe_scale for r in rates]


def decayed(fraction: float, decay: float) -> float:
    """The rate's multiplier after `fraction` of the time budget: geometric from 1 to `decay` at the end."""
    return decay ** min(max(fraction, 0.0), 1.0)


def build_method(method: str, specs: list[nn.Module], args) -> tuple[Callable, nn.Module, dict]:
    """(step(x, y, scale), the model to evaluate, what to record about it) for a fresh copy of the base.

    scale multiplies the method's starting rate (the time-based decay of --lr-decay).
    """
    rank = rank_of(method)
    if method in TRAINABLE:
        freeze_all_but_biases_norms_and_head(specs)
    if rank is None:
        model = nn.Sequential(*specs).train()
        lr = adam_rate(method, args)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)

        def step(x, y, scale=1.0):
            for group in opt.param_groups:
                group["lr"] = lr * scale
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return step, model, {} if method == "backprop" else {"trained_parameters": trained}
    if method == ENDS:
        first_layer(specs[0]).requires_grad_(True)
    if method == TAIL:
        specs[-2].requires_grad_(True)
    market = Market(specs, vendors=args.vendor_counts, rank=rank)
    extra = {"paths": market.num_paths, "lowrank": lowrank_coverage(market),
             # a spec with one vendor is never perturbed: its numbers stay where they are
             "perturbed_parameters": sum(lay.numel for lay, m in zip(market.layouts, market.vendor_counts) if m > 1),
             "frozen_parameters": market.frozen_parameters}
    if method == PARTIAL_ADAM:
        # V2's unit direction per spec as the gradient. Adam gives each number its own step length, so a
        # consistent pull (the stem norm's scales crossing zero) would move at Adam's rate however small its
        # share of the spec's direction; the screens found the noise amplified as much. The probes keep V2's
        # starting width and decay with the rate.
        adam = torch.optim.Adam(market.parameters(), lr=args.estimate_adam_lr)
        widths = probe_width(method, args)
        estimator = ForwardGradient(market, adam, probe_width=widths, seed=args.seed)
        bridge = TorchMarketOptimizer(estimator, adam)

        def step(x, y, scale=1.0):
            for group in adam.param_groups:
                group["lr"] = args.estimate_adam_lr * scale
            estimator.probe_width = [w * scale for w in widths]
            out = market.evaluate(x, bridge.vendors)
            bridge.step(path_losses(out.products, y), out.paths)

        return step, market, extra
    rate = v2_rate(method, args)
    opt = V2(market, lr=rate, probe_scale=args.probe_scale, seed=args.seed)

    rates = list(opt.lr)  # the starting rate of each spec, as V2 read it

    def step(x, y, scale=1.0):
        opt.lr = [r * scale for r in rates]  # the probes' width follows: lr x probe_scale
        out = market.evaluate(x, opt.vendors)
        opt.step(path_losses(out.products, y), out.paths)

    return step, market, extra


def first_layer(spec: nn.Module) -> nn.Module:
    """The first convolution, linear layer or embedding the spec holds: the model's input layer."""
    for module in spec.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Embedding)):
            return module
    raise ValueError(f"{type(spec).__name__} holds no convolution, linear layer or embedding")


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


def step_peak_bytes(fn: Callable[[], None]) -> tuple[int, list[str]]:
    """`peak_tensor_bytes` of fn, and the first line of each warning it raised, ignored from then on.

    The caller says them once and keeps them in the run's JSON: not again at every timed step.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peak = peak_tensor_bytes(fn)
    messages = sorted({str(w.message).splitlines()[0] for w in caught})
    for message in messages:
        warnings.filterwarnings("ignore", message=re.escape(message))
    return peak, messages


def finetune(task: str, method: str, kind: str, base_path: Path, d: dict, before: float, args) -> dict[str, Any]:
    """Train a fresh copy of the base with `method` for --seconds of steps; its curve and memory."""
    x, y, xt, yt = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    rank = rank_of(method)
    batch = args.batch if rank is None else args.market_batch
    first = batch_indices(args.seed, 0, len(x), batch)
    specs = lambda: load_specs(kind, base_path, args.seed, resnet_specs(args))  # a fresh copy of the base
    probe_step, probe_model, _ = build_method(method, specs(), args)
    weights = sum(p.numel() * p.element_size() for p in probe_model.parameters())
    # One step of a throwaway copy, profiled: its memory, and a warm-up (one-time imports and caches are
    # not charged to the budget).
    step_bytes, caught = step_peak_bytes(lambda: probe_step(x[first], y[first]))
    for w in caught:
        print(f"[{task}] {method}: {w}", flush=True)
    del probe_step, probe_model

    step, model, extra = build_method(method, specs(), args)
    curve = [{"seconds": 0.0, "steps": 0, "accuracy": before}]
    seconds, steps, every = 0.0, 0, args.seconds / args.evals
    next_eval, eval_seconds = every, 0.0
    while steps == 0 or seconds < args.seconds:
        idx = batch_indices(args.seed, steps, len(x), batch)
        start = time.perf_counter()
        step(x[idx], y[idx], decayed(seconds / args.seconds, args.lr_decay))
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
