"""Every GPU figure in one call of at most ~10 minutes: CUDA tests, step speed, training runs, continual learning.

On any machine with a CUDA GPU, from a checkout:

    uv run python benchmarks/gpu_suite.py                 # full sizes, 540-s budget
    python3 benchmarks/gpu_suite.py --out DIR             # plain python3 with torch: no install needed

On a CPU, the same code at toy sizes (what the test runs):

    PYTHONPATH=src python3 benchmarks/gpu_suite.py --size tiny --device cpu

Parts that would not fit the budget are skipped, saying so; results are
rewritten after every part (gpu_suite.json, gpu_suite.md, gpu_suite.log,
pytest_cuda.log) in --out, else $OUT, else runs/gpu_suite_<size>_<device>/.
A short table is printed last.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # plain python3, no install needed; benchmarks.lib from anywhere

from benchmarks.lib.suite import SIZES, Suite, output_dirs, run_suite  # noqa: E402
from marketplace.machine import resolve_device  # noqa: E402

PARTS = ("cuda_tests", "step_speed", "v2_train", "v2_default", "backprop", "serving", "philox", "continual_dress",
         "v2_pretrain_no9", "continual_nine", "v2_default_cosine", "v2_train_wide", "step_speed_compiled",
         "v2_sweep", "continual_dress_long")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--tiny", action="store_const", const="tiny", dest="size", help="= --size tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="results folder (default $OUT, else runs/gpu_suite_<size>_<device>)")
    parser.add_argument("--budget", type=float, default=540.0, help="wall-time budget in seconds for all parts")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to skip: {', '.join(PARTS)}")
    parser.add_argument("--only", default="", help="comma-separated parts to run (the rest are skipped)")
    parser.add_argument("--data-dir", default=None, help="default: $MARKETPLACE_DATA_DIR")
    parser.add_argument("--work", default=None, help="checkpoints of the training runs (default: a temp dir)")
    args = parser.parse_args(argv)
    named = [p for p in (args.skip + "," + args.only).split(",") if p]
    unknown = [p for p in named if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; the parts are {', '.join(PARTS)}")
    skip = set(p for p in args.skip.split(",") if p)
    if args.only:
        skip |= set(PARTS) - set(args.only.split(","))
    device = resolve_device(args.device)
    size = SIZES[args.size]
    suite = Suite(size, output_dirs(args.out, size, device), args.budget, device, args.data_dir, tuple(skip))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_suite_"))
    return run_suite(suite, work)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
