"""Bases for the continual experiments: the beautiful-MNIST CNN trained forward-only to >= 96%.

    OMP_NUM_THREADS=1 uv run python experiments/continual_bases.py digits --out results/continual/bases
    OMP_NUM_THREADS=1 uv run python experiments/continual_bases.py no9 --out results/continual/bases

`digits` trains on all ten digits; `no9` leaves 9 out of the loss (the 9s
stay in the batches, their output slot is never trained). Both use the
training command's market (4,4,4 raised to 4x4x64 where the head is cheap)
with a cosine rate over the whole horizon, and checkpoint every 500 steps:
run the same command again to resume where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from marketplace.continual.pretrain import pretrain
from marketplace.io import write_atomic
from marketplace.errors import MarketplaceError
from marketplace.training import Hook, JsonLog, ProgressBar, TrainConfig

EXCLUDE = {"digits": (), "no9": (9,)}


class FirstLine(Hook):
    """Say, before the first step, which market trains and whether the run resumes (the bar is silent off a tty)."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint

    def on_start(self, config, market, start_step: int) -> None:
        where = f"resuming {self.checkpoint} at step {start_step}" if start_step else f"new run, {self.checkpoint}"
        print(f"{'x'.join(map(str, market.vendor_counts))} market, {config.steps} steps; {where}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", choices=sorted(EXCLUDE))
    p.add_argument("--steps", type=int, default=16_000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.15)
    p.add_argument("--cheap-vendors", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="runs/continual-bases")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / f"{args.base}.safetensors"
    config = TrainConfig(algorithm="v2", vendors=(4, 4, 4), cheap_vendors=args.cheap_vendors, batch=args.batch,
                         lr=args.lr, schedule="cosine", steps=args.steps, seed=args.seed, eval_every=500,
                         eval_samples=10_000, checkpoint=str(checkpoint), checkpoint_every=500,
                         resume=checkpoint.exists(), data_dir=args.data_dir)
    hooks = [FirstLine(checkpoint), ProgressBar(), JsonLog(out / f"{args.base}.jsonl")]
    try:
        summary = pretrain(config, EXCLUDE[args.base], hooks)
    except MarketplaceError as e:  # a resume with other settings, missing data: one line, not a traceback
        sys.exit(f"error: {e}")
    summary["torch_threads"] = torch.get_num_threads()  # the training seconds are wall time on this many threads
    write_atomic(out / f"{args.base}.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
