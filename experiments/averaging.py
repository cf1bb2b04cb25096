"""How much averaging the weights adds to the README's market: the base weights and averages over several spans.

Trains the market `marketplace train --vendors 4,4,4` trains (4x4x64 after
the default cheap vendors, lr 0.15, 0.15, 0.075) for --steps steps and, every
--every steps, scores on all 10,000 test images the base weights and an
exponential moving average of them over each span of --spans (the average
`marketplace train --average N` keeps). One run measures every span on the
same trajectory, since averaging never changes the steps.

    OMP_NUM_THREADS=1 uv run python experiments/averaging.py --seed 0 --out runs/averaging/seed0.jsonl
    OMP_NUM_THREADS=1 uv run python experiments/averaging.py --seed 0 --schedule cosine --out runs/averaging/cos0.jsonl

Step-based: the figures do not depend on the machine's load (2,600 steps,
about what the README command gets in 10 minutes on a 2-core AMD EPYC, take
25 minutes on one thread beside another job). One JSON line per evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from marketplace.training import Trainer, TrainConfig, accuracy
from marketplace.training.averaging import weight_average


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spans", default="100,300,1000", help="comma-separated: steps each average spans")
    p.add_argument("--every", type=int, default=250, help="steps between evaluations")
    p.add_argument("--schedule", default="constant", help="v2's schedule over --steps (constant, cosine, ...)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True, help="the JSON-lines log to write")
    args = p.parse_args(argv)
    spans = [int(s) for s in args.spans.split(",")]
    torch.set_num_threads(args.threads)
    trainer = Trainer(TrainConfig(cheap_vendors=0.1, steps=args.steps, seed=args.seed, device="cpu",
                                  schedule=args.schedule, data_dir=args.data_dir, eval_every=args.steps + 1))
    averages = {n: weight_average(trainer.market, n) for n in spans}
    x, y = trainer.x_test_full, trainer.y_test_full
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with out.open("w") as log:
        for step in range(args.steps):
            trainer.step(*trainer.batch(step))
            for averaged in averages.values():
                averaged.update_parameters(trainer.market)
            if (step + 1) % args.every == 0 or step + 1 == args.steps:
                row = {"step": step + 1, "seconds": round(time.perf_counter() - start, 1),
                       "base": accuracy(trainer.market, x, y)[0],
                       **{f"average{n}": accuracy(a.module, x, y)[0] for n, a in averages.items()}}
                print(json.dumps(row), file=log, flush=True)
                print(row, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
