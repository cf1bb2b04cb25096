"""Market depth and vendor count: the marketplace against mutating all weights at once.

Article 1 (V1, batch 512): depth 1 x {8, 16, 32, 64} vendors against depth 3 x
{8, 16}; published: depth 3 x 16 best, then depth 3 x 8, both ahead of
depth 1 x 64. `--algorithm v2` repeats it with V2.

    uv run python experiments/depth.py --steps 150 --scale 0.125 --eval-samples 500   # a short CPU version
    uv run python experiments/depth.py                                                   # the published size (GPU)

The same as `python experiments/run.py depth ...` (`--help` lists the options).
Writes runs/experiments/depth/{RUN.jsonl, depth.png, depth.md} and
tracks each run in MLflow (./mlruns unless --tracking-uri or --no-mlflow);
`--out results` updates the committed tables.
Runs and sizes are defined in experiments/lib/runs.py (depth_runs).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments.lib, from any working directory

from experiments.lib.cli import run_script  # noqa: E402

EXPERIMENT = "depth"

if __name__ == "__main__":
    run_script(EXPERIMENT, sys.argv[1:])
