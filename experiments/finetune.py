"""Forward-only fine-tuning against backprop at equal wall time: how much of backprop's gain does V2 recover?

    OMP_NUM_THREADS=1 uv run python experiments/finetune.py                         # the study, runs/finetune
    OMP_NUM_THREADS=1 uv run python experiments/finetune.py --out results/finetune  # the committed run
    uv run python experiments/finetune.py --tiny --out /tmp/finetune                # the whole pipeline in seconds

Fine-tuning is where training without a backward pass looks most plausible:
the base is already good, the change it needs is small, and nothing has to
be stored for a backward pass. This measures it on one CPU thread.

Bases, trained by backprop (Adam at --pretrain-lr) for --pretrain-steps and
saved under --out as safetensors with their settings: a ResNet-8
(models/resnet.py, GroupNorm, 4 specs: stem + block 1, block 2, block 3,
head; --resnet-specs 5 cuts the stem alone) on Fashion-MNIST classes 0-8
with ten outputs (class 9 is never seen: its output is only pushed down),
and a
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
--v2-lr, probe scale --probe-scale) with dense vendors and with rank-1 and
rank-4 vendors (the transformer: dense and rank 1); `v2-partial`: dense
vendors over the biases, the norms and the head only, every other weight
frozen (requires_grad=False), at --partial-lr; `v2-ends`: the same and the
model's first layer too, where a change of the input meets the model;
`v2-tail`: the same and the whole spec before the head, where the features
a new class needs would form. Two screens, run only when --methods names
them (ResNet tasks): `v2-partial-adam`, the partial market's estimate (V2's
unit direction per spec) stepped by Adam at --estimate-adam-lr through the
torch.optim bridge, its probes as wide as V2's at its starting rate, both
decaying with --lr-decay; and `backprop-partial`, Adam on the numbers the
partial market perturbs (the rest frozen, at --partial-adam-lr, else
--adam-lr), a control for how much of backprop's gain those numbers can
hold at all.
The defaults come from screens (results/finetune/screen/): a 2x2x2x16
market, since the head's vendors are the cheapest (the blocks run 2 + 4 +
8 times per step whatever the head's count) and sixteen of them add about
three points to whole-model V2 on both ResNet tasks; lr 0.3 for every V2
method (on inverted images `--partial-lr 1.0,0.3,0.3,0.3`, the first spec
faster, does better, and worse on the ten-class task, so the default
stays one rate); and rates that fall over the budget (--lr-decay 0.1).
`--lr-decay F` makes every method's rate (Adam's too) fall geometrically
with the training seconds spent, to F times its start at the end of
--seconds.
Low rank factors only Linear, Conv2d (groups=1) and Embedding weights; attention's projections live inside
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

Duration with the defaults, on a 2-core AMD EPYC beside one other job,
the bases reused: 17 of the 20 runs took 42 minutes (measured), about
2.5 minutes a run (120 s of training, 10 evaluations of ~0.75 s on 2,000
images for the ResNet and ~0.3 s for the transformer, one profiled step).
Making the bases adds about 2 minutes (1,000 Adam steps at ~75 ms for the
ResNet, ~32 ms for the transformer).

The bases and tasks are in experiments/lib/finetune_models.py, the timed
runs and memory in finetune_methods.py, the report in finetune_report.py.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from marketplace.io import write_json
from marketplace.memory import reuse_freed_memory
from marketplace.training import accuracy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments.lib, from any working directory

from experiments.lib.finetune_methods import finetune, run_settings  # noqa: E402
from experiments.lib.finetune_models import (  # noqa: E402
    BASES, TASKS, Data, base_settings, check_base, differences, load_specs, make_base)
from experiments.lib.finetune_report import write_report  # noqa: E402

FULL = dict(seconds=120.0, pretrain_steps=1000, batch=64, market_batch=32, vendors="2,2,2,16", evals=10,
            test_images=2000)
TINY = dict(seconds=0.05, pretrain_steps=2, batch=8, market_batch=4, vendors="2,2,2,2", evals=1, test_images=50)


def rates(text: str) -> float | list[float]:
    """`0.3` -> 0.3; `0.3,0.3,0.3,0.15` -> one rate per spec."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a rate or one per spec, like 0.3 or 0.3,0.3,0.3,0.15: {text!r}")
    if min(values) <= 0:
        raise argparse.ArgumentTypeError(f"takes positive rates, got {text!r}")
    return values[0] if len(values) == 1 else values


def positive(text: str) -> float:
    """A rate: a number above zero (argparse names the option in its one-line error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"takes a positive rate, got {text!r}")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/finetune", help="the bases, runs and report (results/ only when given)")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of: {', '.join(TASKS)}")
    p.add_argument("--methods", default=None, help="comma-separated subset of each task's methods, screens included "
                                                     "(default: the study's methods, no screens)")
    p.add_argument("--seconds", type=float, default=None,
                   help=f"training seconds per method (default {FULL['seconds']:g})")
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help=f"Adam steps of each base (default {FULL['pretrain_steps']})")
    p.add_argument("--batch", type=int, default=None,
                   help=f"backprop's batch, bases and fine-tuning (default {FULL['batch']})")
    p.add_argument("--market-batch", type=int, default=None, help=f"V2's batch (default {FULL['market_batch']})")
    p.add_argument("--vendors", default=None, help=f"vendors per spec (default {FULL['vendors']})")
    p.add_argument("--resnet-specs", type=int, default=4,
                   help="specs the ResNet is cut into, 1 to 5 (5: the stem alone); the transformer has 4")
    p.add_argument("--pretrain-lr", type=positive, default=1e-3, help="Adam's rate for the bases")
    p.add_argument("--adam-lr", type=positive, default=1e-3, help="Adam's rate for backprop fine-tuning")
    p.add_argument("--partial-adam-lr", type=positive, default=None,
                   help="Adam's rate for backprop-partial (default --adam-lr)")
    p.add_argument("--v2-lr", type=rates, default=0.3, help="V2's rate: one, or one per spec")
    p.add_argument("--partial-lr", type=rates, default=0.3, help="V2's rate when only part of the model is "
                                                                  "perturbed (v2-partial, v2-ends, v2-tail)")
    p.add_argument("--estimate-adam-lr", type=positive, default=0.01,
                   help="Adam's rate over the partial market's estimate (v2-partial-adam)")
    p.add_argument("--probe-scale", type=float, default=0.1)
    p.add_argument("--lr-decay", type=float, default=0.1,
                   help="every method's rate falls geometrically over --seconds of training to this fraction of "
                        "its start (1: constant)")
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
    every_method = {m for t in TASKS.values() for m in (*t.methods, *t.screens)}
    args.method_names = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.method_names is not None and (set(args.method_names) - every_method or not args.method_names):
        p.error(f"unknown methods {sorted(set(args.method_names) - every_method)}; "
                f"choose from {', '.join(sorted(every_method))}")
    try:
        args.vendor_counts = [int(v) for v in args.vendors.split(",")]
    except ValueError:
        p.error(f"--vendors takes comma-separated integers, got {args.vendors!r}")
    kinds = {TASKS[t].base for t in args.task_names}
    if not 1 <= args.resnet_specs <= 5 or (args.resnet_specs != 4 and "transformer" in kinds):
        p.error(f"--resnet-specs takes 1 to 5, and only for the ResNet tasks (the transformer has 4 specs), "
                f"got {args.resnet_specs}")
    specs = args.resnet_specs if kinds == {"resnet"} else 4
    if len(args.vendor_counts) != specs or min(args.vendor_counts) < 1:
        p.error(f"--vendors needs {specs} positive counts, one per spec, got {args.vendors!r}")
    for name in ("v2_lr", "partial_lr"):
        value = getattr(args, name)
        if isinstance(value, list) and len(value) != specs:
            p.error(f"--{name.replace('_', '-')} takes one rate or {specs} (one per spec), got {len(value)}")
    if args.seconds <= 0 or args.evals < 1 or args.pretrain_steps < 0:
        p.error("--seconds must be > 0, --evals >= 1 and --pretrain-steps >= 0")
    if not 0 < args.lr_decay <= 1:
        p.error(f"--lr-decay must be in (0, 1], got {args.lr_decay}")
    given = sys.argv[1:] if argv is None else argv
    args.command = shlex.join(["uv", "run", "python", "experiments/finetune.py", *given])
    return args


def plan(args) -> list[tuple[str, str]]:
    """(task, method) to run: the study's methods, or those --methods names (screens included)."""
    if args.method_names is None:
        return [(t, m) for t in args.task_names for m in TASKS[t].methods]
    return [(t, m) for t in args.task_names for m in (*TASKS[t].methods, *TASKS[t].screens)
            if m in args.method_names]


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
        base_model = nn.Sequential(*load_specs(spec.base, paths[spec.base], args.seed, args.resnet_specs))
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


if __name__ == "__main__":
    main()
