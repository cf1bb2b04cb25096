"""The continual experiments as resumable scripts (`experiments/continual_*.py`): one shared body.

Serve old + new images each step, every one along a random path, and
reconcile every step's records as V2; checkpoint every `--checkpoint-every`
steps; write the JSON-lines log, the plot and a summary under `--out`.
Running with `--resume` continues a run from its checkpoint; without it an
existing run is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from marketplace.cli.options import for_cli
from marketplace.continual.config import LEARN, ContinualConfig
from marketplace.continual.experiment import EXPERIMENTS, run_experiment
from marketplace.continual.report import PrintProgress, mlflow_hook, plot_log
from marketplace.errors import MarketplaceError
from marketplace.io import write_atomic
from marketplace.training import JsonLog

BASES = {"dress": "results/continual/bases/digits.safetensors",
         "dress-class10": "results/continual/bases/digits.safetensors",
         "nine": "results/continual/bases/no9.safetensors"}


def parser(experiment: str, description: str) -> argparse.ArgumentParser:
    """The script's arguments: those of `ContinualConfig`, with its defaults but the published zscore and paths."""
    exp, d = EXPERIMENTS[experiment], ContinualConfig()
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--checkpoint", default=BASES[experiment], help="the base to start from")
    p.add_argument("--steps", type=int, default=20_000, help="continual steps (published: 100,000)")
    p.add_argument("--old-per-step", type=int, default=d.old_per_step)
    p.add_argument("--new-per-step", type=int, default=d.new_per_step)
    p.add_argument("--few-shot", action="store_true", help=f"the published sampling: {exp.FEW_SHOT}")
    p.add_argument("--vendors", default=",".join(map(str, d.vendors)))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-end", type=float, default=d.lr_end, help="decay the rate geometrically to this at the end")
    p.add_argument("--lr-hold", type=int, default=d.lr_hold, help="steps at --lr before the decay starts")
    p.add_argument("--probe-scale", type=float, default=d.probe_scale)
    p.add_argument("--unit", default=d.unit, choices=["model", "spec"])
    p.add_argument("--records", type=int, default=None, help="K records per update (default: a step's images)")
    p.add_argument("--outliers", type=float, default=None)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--balanced", action="store_true",
                   help="spread the vendors evenly over each step's requests (published: independent paths)")
    p.add_argument("--baseline", action="store_true", help="learn from path loss minus the base weights' loss")
    p.add_argument("--mirrored", action="store_true",
                   help="learn from half the path's loss minus its mirror's (every delta negated)")
    p.add_argument("--attribution", default="zscore", choices=["zscore", "rank"],
                   help="how a step's losses are scored: zscore (V2, as published) or rank (centred ranks)")
    p.add_argument("--learn", default=d.learn, choices=LEARN,
                   help="which weights learn: all, or only the biases, the norms and the head")
    p.add_argument("--average", type=int, default=None,
                   help="validate the weights averaged over about N steps (the served ones are logged too)")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-samples", type=int, default=d.eval_samples)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=f"runs/continual/{experiment}", help="directory for NAME.{jsonl,safetensors,png,json}")
    p.add_argument("--name", default=experiment)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--mlflow", action="store_true", help="also log to MLflow (needs the mlflow extra)")
    return p


def run_script(experiment: str, description: str, argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the script's arguments, run (or resume) `experiment` and write its results."""
    args = parser(experiment, description).parse_args(argv)
    exp = EXPERIMENTS[experiment]
    out = Path(args.out)
    log, save = out / f"{args.name}.jsonl", out / f"{args.name}.safetensors"
    if save.exists() and not args.resume:
        sys.exit(f"error: {save} holds a run already: pass --resume to continue it, or another --out")
    try:
        vendors = tuple(int(v) for v in args.vendors.split(","))
    except ValueError:
        sys.exit(f"error: --vendors must be comma-separated integers, got {args.vendors!r}")
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume or not save.exists():
        log.unlink(missing_ok=True)
    config = ContinualConfig(
        experiment=experiment, checkpoint=args.checkpoint, steps=args.steps, old_per_step=args.old_per_step,
        new_per_step=args.new_per_step, few_shot=args.few_shot, vendors=vendors, lr=args.lr,
        lr_end=args.lr_end, lr_hold=args.lr_hold,
        probe_scale=args.probe_scale, unit=args.unit, records=args.records, outliers=args.outliers,
        augment=args.augment, balanced=args.balanced, baseline=args.baseline, mirrored=args.mirrored,
        attribution=args.attribution, learn=args.learn, average=args.average, eval_every=args.eval_every,
        eval_samples=args.eval_samples, log_every=args.log_every, seed=args.seed, device=args.device,
        data_dir=args.data_dir, log=str(log), save=str(save), checkpoint_every=args.checkpoint_every,
        resume=args.resume)
    try:
        summary = run_experiment(config, [PrintProgress(), JsonLog(log), *(mlflow_hook() if args.mlflow else [])])
    except MarketplaceError as e:  # named as the flags the user typed (--lr-hold, not lr_hold)
        sys.exit(f"error: {for_cli(e)}")
    plot_log(log, out / f"{args.name}.png", title=exp.TITLE)
    write_atomic(out / f"{args.name}.json", json.dumps(summary, indent=2) + "\n")
    verdict = "met" if summary["target_met"] else "not met"
    print(f"target ({exp.TARGET}): {verdict} at {args.steps} steps", flush=True)
    return summary
