"""Continual learning, experiment 1: digits, then Fashion-MNIST dresses shown as the digit 3.

    OMP_NUM_THREADS=1 uv run python experiments/continual_dress.py --steps 20000 --out runs/continual/dress
    OMP_NUM_THREADS=1 uv run python experiments/continual_dress.py --steps 20000 --out runs/continual/dress --resume

Starts from the digits base (`experiments/continual_bases.py digits`),
serves 240 digits + 16 dresses per step, each along one random path, and
reconciles every step's 256 records as V2 (whole-model unit vector, fixed
lr), as `marketplace continual dress` does. Checkpoints every 1,000 steps;
writes the JSON-lines log, the plot and a summary under --out. Published
(100,000 steps): dress 86% validation, digits 96.2% -> 95.2%.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments.lib, from any working directory

from experiments.lib.continual import run_script  # noqa: E402


def main(argv=None) -> dict:
    return run_script("dress", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
