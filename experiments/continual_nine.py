"""Continual learning, experiment 2: digits 0-8, then learn 9.

    OMP_NUM_THREADS=1 uv run python experiments/continual_nine.py --steps 20000 --out runs/continual/nine
    OMP_NUM_THREADS=1 uv run python experiments/continual_nine.py --steps 20000 --out runs/continual/nine --resume

Starts from the digits-0-8 base (`experiments/continual_bases.py no9`, 9 left
out of its loss), serves 240 images of 0-8 + 16 nines per step, each along
one random path, and reconciles every step's 256 records as V2 (whole-model
unit vector, fixed lr), as `marketplace continual nine` does. Checkpoints
every 1,000 steps; writes the JSON-lines log, the plot and a summary under
--out. Published (100,000 steps): 9 at 71% validation, 0-8 96.8% -> 95.2%.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments.lib, from any working directory

from experiments.lib.continual import run_script  # noqa: E402


def main(argv=None) -> dict:
    return run_script("nine", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
