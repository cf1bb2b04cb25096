"""The published continual-learning runs as scripts (`experiments/continual_dress.py`, `..._nine.py`): one body.

1. Pre-train the beautiful-MNIST CNN with V2 (4x4x4), leaving the
   experiment's held-out classes out of the loss, unless the checkpoint exists
   (said in one line; `--fresh` pre-trains again over it).
2. Serve old + new images each step, every one along a random path, and
   reconcile every step's records as V2 (whole-model unit vector, fixed lr).
3. Write the JSON-lines log, the plot and a summary under --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from marketplace.continual.experiment import EXPERIMENTS, ContinualConfig, run_experiment
from marketplace.continual.pretrain import pretrain
from marketplace.continual.report import PrintProgress, mlflow_hook, plot_log
from marketplace.io import write_json
from marketplace.training import JsonLog, TrainConfig


def run_script(experiment: str, description: str, argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the script's arguments, pre-train if needed, run `experiment` and write its results."""
    exp = EXPERIMENTS[experiment]
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--checkpoint", default=exp.DEFAULT_CHECKPOINT)
    p.add_argument("--pretrain-steps", type=int, default=2000, help="published: 2,000 (96%%)")
    p.add_argument("--fresh", action="store_true", help="pre-train again even if --checkpoint exists")
    p.add_argument("--pretrain-seconds", type=float, default=None, help="or stop pre-training after this long")
    p.add_argument("--steps", type=int, default=1000, help="continual steps (published: 100,000)")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--probe-scale", type=float, default=1.0)
    p.add_argument("--few-shot", action="store_true", help=f"the published sampling: {exp.FEW_SHOT}")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="runs/continual",
                   help=f"directory for {experiment}.jsonl, {experiment}.png, {experiment}.json")
    p.add_argument("--name", default=experiment)
    args = p.parse_args(argv)

    if Path(args.checkpoint).exists() and not args.fresh:
        print(f"using the pre-trained {args.checkpoint} as it is (--pretrain-steps and --pretrain-seconds "
              "do not apply; --fresh pre-trains again)", flush=True)
    else:
        Path(args.checkpoint).unlink(missing_ok=True)  # with --fresh: start over, not from the old one
        summary = pretrain(TrainConfig(algorithm="v2", vendors=(4, 4, 4), batch=128, steps=args.pretrain_steps,
                                       max_seconds=args.pretrain_seconds, device=args.device,
                                       data_dir=args.data_dir, checkpoint=args.checkpoint, eval_every=100,
                                       eval_samples=1000), exclude=exp.EXCLUDE)
        held_out = f" without {', '.join(map(str, exp.EXCLUDE))}" if exp.EXCLUDE else ""
        print(f"pre-trained{held_out}: {summary['test_accuracy']:.2f}% after {summary['steps']} steps", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"{args.name}.jsonl"
    log.unlink(missing_ok=True)
    config = ContinualConfig(experiment=experiment, checkpoint=args.checkpoint, steps=args.steps, lr=args.lr,
                             probe_scale=args.probe_scale, few_shot=args.few_shot, eval_every=args.eval_every,
                             eval_samples=args.eval_samples, device=args.device, data_dir=args.data_dir,
                             log=str(log))
    summary = run_experiment(config, [PrintProgress(), JsonLog(log), *mlflow_hook()])
    plot_log(log, out / f"{args.name}.png", title=exp.TITLE)
    write_json(out / f"{args.name}.json", summary)
    verdict = "met" if summary["target_met"] else "not met"
    print(f"target ({exp.TARGET}): {verdict} at {args.steps} steps")
    return summary
