"""The cost of one continual-learning step against plain inference of the same images.

    OMP_NUM_THREADS=1 uv run python benchmarks/continual_step.py --out benchmarks/results

A step serves 256 requests (240 digits + 16 dresses) each along its own
random path of a 4x4x4 market, computes their losses and makes one V2 update
from the 256 records (`ContinualLearner.serve` with labels: the forward, the
losses, the reconciliation, the seed redraw and the bookkeeping). Plain
inference is `market(x)`, the base weights on the same 256 images. Variants:

- `plain`: plain inference (the reference);
- `serve`: random-path inference only (`learner.infer`), no learning;
- `step`: the continual step;
- `step --baseline`: the step with the base weights run too (the answer is
  theirs, records learn from path loss minus base loss);
- `step --balanced`: the step with balanced paths (each request's vendor
  still uniform, the vendors spread evenly over the batch: no padding),
  what continual runs and the server use by default;
- `step --baseline --balanced`: both;
- `step --mirrored --balanced`: each request run along its mirrored path
  too (every delta negated), records learn from half the difference.

The targets apply to the default, balanced paths; the independent-path rows
(the article's sampling) are there to compare.

The variants run interleaved, round by round, so a busy machine slows them
alike; the table gives the median time per call and its ratio to plain
inference. Validation is not part of a step (a run validates every
`--eval-every` steps on a fixed subsample; see docs/continual.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.*, from any working directory

from marketplace import Market
from marketplace.continual import ContinualLearner
from marketplace.data import load_data
from marketplace.machine import machine_name, resolve_device
from marketplace.models import beautiful_mnist
from marketplace.optim import V2

from benchmarks.serving import timed  # noqa: E402

TARGETS = {"step --balanced": 1.25, "step --baseline --balanced": 2.25, "step --mirrored --balanced": 2.25}


def stream_batch(device: torch.device, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """240 digits and 16 dresses (labelled 3, as the article shows them), the first of each."""
    x, y = load_data("mnist", "train", data_dir, device)
    fx, fy = load_data("fashion-mnist", "train", data_dir, device)
    dress = fx[fy == 3][:16]
    return torch.cat([x[:240], dress]), torch.cat([y[:240], torch.full((16,), 3, device=device)])


def learner(market: Market, baseline: bool, balanced: bool = False, mirrored: bool = False) -> ContinualLearner:
    opt = V2(market, lr=1e-2, probe_scale=1.0, per_spec=False, decay=0.0, seed=0)
    return ContinualLearner(opt, records=256, path_seed=0, baseline=baseline, balanced=balanced, mirrored=mirrored)


def bench(device: torch.device, rounds: int, calls: int, data_dir: str | None) -> dict[str, list[float]]:
    torch.manual_seed(0)
    x, y = stream_batch(device, data_dir)
    plain_market = Market(beautiful_mnist(), [4, 4, 4]).to(device)
    markets = {name: Market(beautiful_mnist(), [4, 4, 4]).to(device)
               for name in ("serve", "step", "baseline", "balanced", "baseline-balanced", "mirrored-balanced")}
    learners = {"serve": learner(markets["serve"], False), "step": learner(markets["step"], False),
                "step --baseline": learner(markets["baseline"], True),
                "step --balanced": learner(markets["balanced"], False, balanced=True),
                "step --baseline --balanced": learner(markets["baseline-balanced"], True, balanced=True),
                "step --mirrored --balanced": learner(markets["mirrored-balanced"], False, balanced=True, mirrored=True)}
    variants = {
        "plain": lambda: torch.no_grad()(plain_market)(x),
        "serve": lambda: learners["serve"].infer(x),
        "step": lambda: learners["step"].serve(x, labels=y),
        "step --baseline": lambda: learners["step --baseline"].serve(x, labels=y),
        "step --balanced": lambda: learners["step --balanced"].serve(x, labels=y),
        "step --baseline --balanced": lambda: learners["step --baseline --balanced"].serve(x, labels=y),
        "step --mirrored --balanced": lambda: learners["step --mirrored --balanced"].serve(x, labels=y),
    }
    for fn in variants.values():  # warm up: allocator, first-call costs
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, fn in variants.items():
            times[name].append(sum(timed(fn, device) for _ in range(calls)) / calls)
        print(f"round {r + 1}/{rounds}: " + "  ".join(f"{n} {1000 * t[-1]:.1f} ms" for n, t in times.items()),
              flush=True)
    assert learners["step"].stats["updates"] >= rounds * calls, "every step must have made an update"
    return times


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=5, help="calls per variant per round")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="runs/benchmarks", help="directory for continual_step_<device>.{json,md}")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    load_before = os.getloadavg()
    times = bench(device, args.rounds, args.calls, args.data_dir)
    load = [round(v, 2) for v in (*load_before, *os.getloadavg())]
    plain = statistics.median(times["plain"])
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        ratio = median / plain
        target = TARGETS.get(name)
        rows.append({"variant": name, "median_ms": round(1000 * median, 2), "ratio_to_plain": round(ratio, 3),
                     "target": target, "met": None if target is None else ratio <= target})
    result = {"benchmark": "continual_step", "machine": machine_name(device), "device": str(device),
              "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "batch": 256,
              "market": [4, 4, 4], "rounds": args.rounds, "calls_per_round": args.calls,
              "load_average_before_after": load, "rows": rows,
              "times_s": times}
    lines = [f"# Continual step against plain inference ({result['machine']}, "
             f"torch {torch.__version__})", "",
             "256 requests (240 digits + 16 dresses), 4x4x4 market; median of "
             f"{args.rounds} interleaved rounds of {args.calls} calls; load average {load[0]} before, "
             f"{load[3]} after (1 min).", "",
             "| variant | median ms | x plain inference | target |", "| --- | ---: | ---: | --- |"]
    for row in rows:
        target = "" if row["target"] is None else f"<= {row['target']}x: {'met' if row['met'] else 'not met'}"
        lines.append(f"| {row['variant']} | {row['median_ms']:.1f} | {row['ratio_to_plain']:.2f} | {target} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cpu" if device.type == "cpu" else device.type
    (out / f"continual_step_{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"continual_step_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))
    return result


if __name__ == "__main__":
    main()
