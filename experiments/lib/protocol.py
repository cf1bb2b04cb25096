"""The measurement protocol: accuracy at equal steps, not at equal (loaded) wall time.

MNIST, the beautiful-MNIST CNN as a 4x4x4 market, batch 128, 1,500 steps,
seeds 0, 1 and 2; final test accuracy of the base weights on all 10,000
test images, as mean and spread over the seeds, for plain V2 (exactly the
vendors asked for) and for each variant. Every run is `marketplace train ... --json` in
its own process (one intra-op thread each), so `--jobs 2` runs two at once
on a 2-core machine. A run whose result file exists is not run again: the
protocol can be stopped and resumed, and a partial table is still a table.

    uv run python experiments/protocol.py --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from marketplace.io import write_atomic
from marketplace.machine import cpu_name

# name -> options of `marketplace train` beyond the protocol's own
VARIANTS: dict[str, list[str]] = {
    "v2": ["--cheap-vendors", "0"],  # plain V2: lr 0.15, probe scale 0.03, decay 1e-5, 4x4x4
    # what --cheap-vendors 0.05 (an earlier default) makes of 4,4,4: 32 head vendors,
    # 3% more FLOPs
    "v2-4x4x32": ["--vendors", "4,4,32", "--cheap-vendors", "0"],
    # twice the head vendors, 7% more FLOPs (--cheap-vendors 0.1, the default since); and with a cosine
    # schedule over the 1,500 steps
    "v2-4x4x64": ["--vendors", "4,4,64", "--cheap-vendors", "0"],
    "v2-4x4x64-cosine": ["--vendors", "4,4,64", "--cheap-vendors", "0", "--schedule", "cosine"],
    # the same market with the head's rate (and so its probes) at half the convolutions'
    "v2-4x4x64-head-half": ["--vendors", "4,4,64", "--cheap-vendors", "0", "--lr", "0.15,0.15,0.075"],
    # the adaptive rate (a second market pass per step picks lr * (1 + r), r within +-meta_lr 0.1), as it was
    "adaptive": ["--algorithm", "adaptive", "--cheap-vendors", "0"],
    # the same, stabilised: the rate held within 0.5..2 x lr 0.15, the kept rate an EMA (beta 0.9) of the chosen ones
    "adaptive-stable": ["--algorithm", "adaptive", "--rate-bounds", "0.5,2", "--rate-smoothing", "0.9",
                        "--cheap-vendors", "0"],
}
PROTOCOL = ["--dataset", "mnist", "--vendors", "4,4,4", "--batch", "128", "--eval-every", "100", "--quiet", "--json"]


def run_one(name: str, seed: int, steps: int, device: str, out: Path, train: bool = True) -> dict | None:
    """Train one (variant, seed) unless its result exists; the summary of `marketplace train --json`."""
    result = out / "logs" / f"{name}-s{seed}.json"
    if result.exists():
        return json.loads(result.read_text())
    if not train:
        return None
    result.parent.mkdir(parents=True, exist_ok=True)
    log = out / "logs" / f"{name}-s{seed}.jsonl"
    args = [sys.executable, "-m", "marketplace", "train", *PROTOCOL, *VARIANTS[name], "--steps", str(steps),
            "--seed", str(seed), "--device", device, "--log", str(log)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"{name} seed {seed} failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary.update(variant=name, seed=seed, command=" ".join(["marketplace", *args[3:]]))
    write_atomic(result, json.dumps(summary) + "\n")  # a finished run is read back: never half a file
    return summary


def table(results: dict[str, list[dict]], steps: int) -> str:
    """Markdown: mean, sample standard deviation and range of the final test accuracy per variant."""
    lines = [f"| variant | options | seeds | test accuracy at {steps:,} steps, mean ± std | min - max |",
             "| --- | --- | --- | ---: | ---: |"]
    for name, runs in results.items():
        accs = [r["test_accuracy"] for r in runs]
        if not accs:
            lines.append(f"| {name} | {' '.join(VARIANTS[name])} | none finished | | |")
            continue
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else " (one seed)"
        seeds = ",".join(str(r["seed"]) for r in runs)
        lines.append(f"| {name} | {' '.join(VARIANTS[name])} | {seeds} | "
                     f"{statistics.mean(accs):.2f}{spread} | {min(accs):.2f} - {max(accs):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one intra-op thread each)")
    parser.add_argument("--out", default="runs/protocol", help="default runs/protocol; results/protocol holds the committed table")
    parser.add_argument("--report-only", action="store_true", help="tabulate the finished runs, start none")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    jobs = [(n, s) for s in seeds for n in names]  # seed-major: every variant's seed 0 finishes first
    train = not args.report_only
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        summaries = list(pool.map(lambda job: run_one(*job, args.steps, args.device, out, train), jobs))
    results = {n: [r for (name, _), r in zip(jobs, summaries) if name == n and r] for n in names}
    markdown = table(results, args.steps)
    print(markdown)
    record = {"protocol": {"dataset": "mnist", "market": "4x4x4", "batch": 128, "steps": args.steps,
                           "seeds": seeds, "device": args.device, "test_images": 10_000},
              "machine": cpu_name(), "cores": os.cpu_count(), "date": datetime.now(timezone.utc).isoformat(),
              "variants": {n: {"options": VARIANTS[n], "runs": results[n]} for n in names}}
    write_atomic(out / f"protocol_{args.device}.json", json.dumps(record, indent=1) + "\n")
    write_atomic(out / f"protocol_{args.device}.md", markdown + "\n")


if __name__ == "__main__":
    main()
