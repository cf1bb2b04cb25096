"""Continual learning, experiment 1 (docs/algorithm.md section 7): digits, then dress as class 10.

    OMP_NUM_THREADS=1 uv run python experiments/continual_dress.py --pretrain-seconds 420 --steps 600

1. Pre-train the beautiful-MNIST CNN on digits with V2 (4x4x4), exactly as
   `marketplace train --algorithm v2 --vendors 4,4,4 --checkpoint ...` does,
   unless the checkpoint exists.
2. Serve 240 digit + 16 dress images per step, each along one random path;
   reconcile every step's 256 records as V2 (whole-model unit vector, fixed
   lr) — `marketplace continual dress`.
3. Write the JSON-lines log, the plot and a summary under --out.

Published (100,000 steps): dress 86% validation, digits 96.2% -> 95.2%.
Target: dress >= 90% within 20,000 steps, digits losing <= 0.5 points.
"""

from marketplace.continual.script import run_script


def main(argv=None) -> dict:
    return run_script("dress", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
