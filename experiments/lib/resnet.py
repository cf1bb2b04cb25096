"""A GroupNorm ResNet on the market: V2 against backprop SGD and Adam, at equal steps and equal wall time.

All three start from the same weights (the preset built from the same seed)
and see the same batches (`training.batch_indices(seed, t)`). V2 runs
`steps` steps; each backprop baseline runs at least as many, and on until
its training time reaches V2's, so that both comparisons come from one run.
Time counts training steps only: the evaluations (every `eval_every`
steps during the first `steps`, then every `late_eval_every`) are excluded.

    uv run python experiments/resnet.py --steps 300                   # the CPU size
    uv run python experiments/resnet.py --arch resnet18 --dataset cifar10 --device cuda --steps 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from marketplace.functional import path_losses
from marketplace.io import atomic_path, write_atomic, write_json
from marketplace.machine import machine_summary, resolve_device
from marketplace.training import TrainConfig, accuracy, batch_indices, build_market, build_optimizer
from marketplace.training.config import DEFAULT_LR
from marketplace.training.loop import data_shape, load_training_data


def _curve(name: str, step_fn: Callable[[torch.Tensor, torch.Tensor], None], model: torch.nn.Module,
           data: dict, cfg: TrainConfig, min_steps: int, max_seconds: float | None, late_eval_every: int,
           max_steps: int, log: Path) -> dict[str, Any]:
    """Train with `step_fn` and write a JSON line per evaluation; returns the equal-step/-time figures."""
    x_train, y_train, x_eval, y_eval = data["x_train"], data["y_train"], data["x_eval"], data["y_eval"]
    seconds, step, rows = 0.0, 0, []
    at_steps = at_time = None
    with log.open("w") as out:
        while step < max_steps:
            if step >= min_steps and (max_seconds is None or seconds >= max_seconds):
                break
            idx = batch_indices(cfg.seed, step, len(x_train), cfg.batch)
            t0 = time.perf_counter()
            step_fn(x_train[idx], y_train[idx])
            seconds += time.perf_counter() - t0
            step += 1
            every = cfg.eval_every if step <= min_steps else late_eval_every
            if step % every == 0 or step == min_steps:
                acc, loss = accuracy(model, x_eval, y_eval)
                row = {"run": name, "step": step, "seconds": round(seconds, 3), "test_accuracy": acc, "test_loss": loss}
                rows.append(row)
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(json.dumps(row), flush=True)
            if step == min_steps:
                at_steps = {"step": step, "seconds": round(seconds, 3),
                            "test_accuracy": accuracy(model, data["x_test"], data["y_test"])[0]}
    at_time = {"step": step, "seconds": round(seconds, 3),
               "test_accuracy": accuracy(model, data["x_test"], data["y_test"])[0]}
    return {"run": name, "equal_steps": at_steps, "end": at_time, "curve": rows}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    vendors = tuple(int(v) for v in args.vendors.split(","))
    cfg = TrainConfig(dataset=args.dataset, model=args.arch, vendors=vendors, batch=args.batch, seed=args.seed,
                      steps=args.steps, eval_every=args.eval_every, eval_samples=args.eval_samples,
                      lr=args.lr, probe_scale=args.probe_scale, device=args.device, data_dir=args.data_dir)
    cfg.validate()
    x_train, y_train = load_training_data(cfg, "train", device)
    x_test, y_test = load_training_data(cfg, "test", device)
    data = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "x_eval": x_test[: args.eval_samples], "y_eval": y_test[: args.eval_samples]}
    shape, classes = data_shape(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine_summary(), "config": {**vars(args)}, "runs": []}

    market = build_market(cfg, device, shape, classes)
    optimizer = build_optimizer(cfg, market)

    def v2_step(x, y):
        products = market.evaluate(x, optimizer.vendors)
        optimizer.step(path_losses(products.products, y), products.paths)

    v2 = _curve(f"v2-{args.vendors.replace(',', 'x')}", v2_step, market, data, cfg, args.steps, None,
                args.eval_every, args.steps, out / "v2.jsonl")
    v2["paths_per_step"] = market.num_paths
    results["runs"].append(v2)
    budget = v2["end"]["seconds"]

    for name, make in (("sgd", lambda p: torch.optim.SGD(p, lr=args.sgd_lr, momentum=args.momentum)),
                       ("adam", lambda p: torch.optim.Adam(p, lr=args.adam_lr))):
        model = torch.nn.Sequential(*build_market(TrainConfig(model=args.arch, vendors=(1,), seed=args.seed),
                                                  device, shape, classes).specs)
        model.train()
        opt = make(model.parameters())

        def bp_step(x, y, model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        results["runs"].append(_curve(name, bp_step, model, data, cfg, args.steps, budget, args.late_eval_every,
                                      args.max_backprop_steps, out / f"{name}.jsonl"))
    write_json(out / "resnet.json", results, indent=1)
    write_report(out)
    return results


def write_report(out: Path) -> None:
    """resnet.md (the table, the machine) and resnet.png (accuracy against steps and seconds) from resnet.json."""
    results = json.loads((out / "resnet.json").read_text())
    cfg = results["config"]
    v2 = results["runs"][0]
    rows = ["| run | steps | train seconds | test accuracy (10,000) |", "| --- | ---: | ---: | ---: |"]
    for r in results["runs"]:
        rows.append(f"| {r['run']} at equal steps | {r['equal_steps']['step']} | {r['equal_steps']['seconds']:.0f} | "
                    f"{r['equal_steps']['test_accuracy']:.2f}% |")
    for r in results["runs"][1:]:
        rows.append(f"| {r['run']} at V2's wall time | {r['end']['step']} | {r['end']['seconds']:.0f} | "
                    f"{r['end']['test_accuracy']:.2f}% |")
    text = [
        f"# {cfg['arch']} (GroupNorm) on {cfg['dataset']}: V2 against backprop",
        "",
        f"Machine: {results['machine']}; **shared** with other jobs while it ran, so seconds are noisy "
        "(the step counts are not).",
        f"Market {v2['run'][3:]} ({v2.get('paths_per_step')} paths per step), batch {cfg['batch']}, "
        f"V2 lr {cfg['lr'] or DEFAULT_LR['v2']}, probe scale {cfg['probe_scale']}; SGD lr {cfg['sgd_lr']} "
        f"(momentum {cfg['momentum']}), Adam lr {cfg['adam_lr']}; the same initial weights and batches (seed {cfg['seed']}).",
        "Train seconds count the training steps only. Each backprop run goes on past V2's step count until its "
        "training time reaches V2's.",
        "Seconds per step over the first steps: " + ", ".join(
            f"{r['run']} {r['equal_steps']['seconds'] / r['equal_steps']['step']:.2f}" for r in results["runs"]) + ".",
        "",
        *rows,
        "",
        f"Curves (test accuracy on the first {cfg['eval_samples']} test images): resnet.png; logs: v2.jsonl, "
        "sgd.jsonl, adam.jsonl. Rerun: `nice -n 5 uv run python experiments/resnet.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in cfg.items() if v is not None and k != "out") + "`.",
        "",
    ]
    write_atomic(out / "resnet.md", "\n".join(text))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for r in results["runs"]:
        steps = [row["step"] for row in r["curve"]]
        secs = [row["seconds"] for row in r["curve"]]
        acc = [row["test_accuracy"] for row in r["curve"]]
        line = axes[0].plot(steps, acc, marker=".", label=r["run"])[0]
        axes[1].plot(secs, acc, marker=".", color=line.get_color())
        for ax, key, point in ((axes[0], "step", r["equal_steps"]), (axes[1], "seconds", r["end"])):
            ax.plot([point[key]], [point["test_accuracy"]], marker="x", ms=8, color=line.get_color())
    axes[0].set_xlim(0, v2["end"]["step"] * 1.05)
    axes[0].set_xlabel("steps (equal steps)")
    axes[1].set_xlabel("training seconds (equal wall time)")
    axes[1].axvline(v2["end"]["seconds"], color="grey", lw=0.8, ls="--")
    axes[0].set_ylabel(f"test accuracy % (first {cfg['eval_samples']}; x: all)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{cfg['arch']} on {cfg['dataset']}, shared CPU", fontsize=10)
    fig.tight_layout()
    with atomic_path(out / "resnet.png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet8", help="resnet8, resnet20 or resnet18 (models/resnet.py)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--vendors", default="4,4,4,4")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="V2 learning rate (default: the CLI's)")
    p.add_argument("--probe-scale", type=float, default=0.03)
    p.add_argument("--sgd-lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--adam-lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--late-eval-every", type=int, default=250, help="backprop evaluations after `steps`")
    p.add_argument("--max-backprop-steps", type=int, default=20_000)
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="runs/resnet", help="default runs/resnet; results/resnet holds the committed run")
    p.add_argument("--report-only", action="store_true", help="rewrite resnet.md and resnet.png from resnet.json")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parser().parse_args(argv)
    if args.report_only:
        write_report(Path(args.out))
        return None
    return run(args)
