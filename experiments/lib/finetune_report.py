"""The fine-tuning study's report: the score against backprop, the table, the JSON, the curves and the README."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from marketplace.io import atomic_path, write_atomic, write_json
from marketplace.machine import machine_name

from experiments.lib.finetune_methods import BACKPROP_PARTIAL, PARTIAL_ADAM, TRAINABLE, adam_rate, resnet_specs
from experiments.lib.finetune_models import TASKS


def rate_text(rate) -> str:
    """0.3 -> "0.3"; [0.3, 0.3, 0.3, 0.15] -> "0.3,0.3,0.3,0.15 (per spec)"."""
    if isinstance(rate, (list, tuple)):
        return ",".join(f"{r:g}" for r in rate) + " (per spec)"
    return f"{rate:g}"


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
        f"{args.adam_lr:g}, batch {args.batch}. V2: {'x'.join(map(str, args.vendor_counts))} market"
        + (f" (the ResNet cut into {resnet_specs(args)} specs{', the stem alone' if resnet_specs(args) == 5 else ''})"
           if resnet_specs(args) != 4 else "")
        + ", batch "
        f"{args.market_batch}, lr {rate_text(args.v2_lr)} (v2-partial, v2-ends and v2-tail: "
        f"{rate_text(args.partial_lr)}; v2-partial "
        "perturbs only the biases, the norms and the head, v2-ends those and the first layer, v2-tail those and "
        "the spec before the head), probe scale "
        f"{args.probe_scale:g}."
        + (f" v2-partial-adam: the partial market's estimate stepped by Adam lr {args.estimate_adam_lr:g}, "
           "probes as wide as v2-partial's at its start." if any(r["method"] == PARTIAL_ADAM for r in rows)
           else "")
        + (f" backprop-partial: Adam lr {adam_rate(BACKPROP_PARTIAL, args):g} on the "
           f"{TRAINABLE[BACKPROP_PARTIAL]} only."
           if any(r["method"] == BACKPROP_PARTIAL for r in rows) else "")
        + (f" Every rate falls geometrically over the {args.seconds:g} s to {args.lr_decay:g} of its start."
           if args.lr_decay != 1 else "")
        + " Gain: after - before; "
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
    methods = list(dict.fromkeys(m for t in TASKS.values() for m in (*t.methods, *t.screens)))
    color = {m: f"C{i % 10}" for i, m in enumerate(methods)}  # one colour per method in every panel
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in rows if r["task"] == task):
            ax.plot([p["seconds"] for p in r["curve"]], [p["accuracy"] for p in r["curve"]], marker=".",
                    color=color[r["method"]], label=r["method"])
        ax.axhline(next(r["before"] for r in rows if r["task"] == task), color="grey", lw=0.8, ls="--")
        ax.set_title(TASKS[task].title, fontsize=9)
        ax.set_xlabel("training seconds (one thread)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"test accuracy % (first {args.test_images})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
