"""Continual learning, experiment 2 (docs/algorithm.md section 7): digits 0-8, then learn 9.

    OMP_NUM_THREADS=1 uv run python experiments/continual_nine.py --pretrain-seconds 420 --steps 600

1. Pre-train the beautiful-MNIST CNN with V2 (4x4x4) with digit 9 left out
   of the loss (the article's ignore_index run), as
   `marketplace continual pretrain --exclude 9 --checkpoint ...` does,
   unless the checkpoint exists. The 9s stay in the batches; their output
   slot is never trained.
2. Serve 240 images of 0-8 + 16 nines per step, each along one random path;
   reconcile every step's 256 records as V2 (whole-model unit vector, fixed
   lr) — `marketplace continual nine`.
3. Write the JSON-lines log, the plot and a summary under --out.

Published (100,000 steps): 9 at 71% validation, 0-8 96.8% -> 95.2%.
Target: 9 >= 90% within 20,000 steps, 0-8 losing <= 0.5 points.
"""

from marketplace.continual.script import run_script


def main(argv=None) -> dict:
    return run_script("nine", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
