"""Marketplace V1 and V2 against backprop with SGD and Adam, same CNN, batches and steps.

Article 2: V1 and V2 on the 3 x 16 market against SGD at 1e-3, 3e-3, 7e-3
(with BatchNorm, as published) and Adam (InstanceNorm, article 1);
published: V2 far ahead of V1, ahead of SGD 1e-3, behind SGD 3e-3 and 7e-3.

    uv run python experiments/backprop.py --steps 150 --scale 0.125 --eval-samples 500   # a short CPU version
    uv run python experiments/backprop.py                                                   # the published size (GPU)

The same as `python experiments/run.py backprop ...` (`--help` lists the options).
Writes runs/experiments/backprop/{RUN.jsonl, backprop.png, backprop.md} and
tracks each run in MLflow (./mlruns unless --tracking-uri or --no-mlflow);
`--out results` updates the committed tables.
Runs and sizes are defined in experiments/lib/runs.py (backprop_runs).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments.lib, from any working directory

from experiments.lib.cli import run_script  # noqa: E402

EXPERIMENT = "backprop"

if __name__ == "__main__":
    run_script(EXPERIMENT, sys.argv[1:])
