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
import time
from pathlib import Path

from marketplace.continual.pretrain import pretrain
from marketplace.training import JsonLog, ProgressBar, TrainConfig

EXCLUDE = {"digits": (), "no9": (9,)}


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
    start = time.process_time()
    summary = pretrain(config, EXCLUDE[args.base], [ProgressBar(), JsonLog(out / f"{args.base}.jsonl")])
    summary["cpu_seconds_this_process"] = time.process_time() - start
    (out / f"{args.base}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
