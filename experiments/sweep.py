"""Learning rate and decay sweep on the 3 x 16 market.

Article 1: the learning rate and its decay schedule decide whether training
works. `--lrs 0.03,0.1,0.3 --decays 1e-4,1e-5` (the default for V2) sets the grid.

    uv run python experiments/sweep.py --steps 150 --scale 0.125 --eval-samples 500   # a short CPU version
    uv run python experiments/sweep.py                                                   # the published size (GPU)

The same as `python experiments/run.py sweep ...` (`--help` lists the options).
Writes runs/experiments/sweep/{RUN.jsonl, sweep.png, sweep.md} and
tracks each run in MLflow (./mlruns unless --tracking-uri or --no-mlflow);
`--out results` updates the committed tables.
Runs and sizes are defined in experiments/lib/runs.py (sweep_runs).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments.lib, from any working directory

from experiments.lib.cli import run_script  # noqa: E402

EXPERIMENT = "sweep"

if __name__ == "__main__":
    run_script(EXPERIMENT, sys.argv[1:])
