"""InstanceNorm against batch norm inside the market (V2, 3 x 16).

Article 1 saw test accuracy fluctuate with BatchNorm and not with InstanceNorm.
A Market refuses nn.BatchNorm2d, so the batch-norm runs use
norms.ProductBatchNorm2d: statistics per product ("product-batch") or over
all the products a vendor consumes ("mixed-batch"), never running averages.

    uv run python experiments/norm.py --steps 150 --scale 0.125 --eval-samples 500   # a short CPU version
    uv run python experiments/norm.py                                                   # the published size (GPU)

The same as `marketplace experiment norm ...`; every option of that command
works here (`--help`). Writes results/norm/{RUN.jsonl, norm.png, norm.md} and
tracks each run in MLflow (./mlruns unless --tracking-uri or --no-mlflow).
Runs and sizes are defined in src/marketplace/experiments/runs.py (norm_runs).
"""

import sys

from marketplace.cli.experiment import run_script

EXPERIMENT = "norm"

if __name__ == "__main__":
    run_script(EXPERIMENT, sys.argv[1:])
