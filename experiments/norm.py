"""InstanceNorm against batch norm inside the market (V2, 3 x 16).

Article 1 saw test accuracy fluctuate with BatchNorm and not with InstanceNorm.
A Market refuses nn.BatchNorm2d, so the batch-norm runs use
norms.ProductBatchNorm2d: statistics per product ("product-batch") or over
all the products a vendor consumes ("mixed-batch"), never running averages.

    uv run python experiments/norm.py --steps 150 --scale 0.125 --eval-samples 500   # a short CPU version
    uv run python experiments/norm.py                                                   # the published size (GPU)

The same as `python experiments/run.py norm ...` (`--help` lists the options).
Writes runs/experiments/norm/{RUN.jsonl, norm.png, norm.md} and
tracks each run in MLflow (./mlruns unless --tracking-uri or --no-mlflow);
`--out results` updates the committed tables.
Runs and sizes are defined in experiments/lib/runs.py (norm_runs).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments.lib, from any working directory

from experiments.lib.cli import run_script  # noqa: E402

EXPERIMENT = "norm"

if __name__ == "__main__":
    run_script(EXPERIMENT, sys.argv[1:])
