"""Run one of the articles' experiments by name: `python experiments/run.py NAME|list [OPTIONS]`.

    uv run python experiments/run.py list                                            # the experiments
    uv run python experiments/run.py depth --steps 150 --scale 0.125 --eval-samples 500

Each experiment also has its own script (`python experiments/depth.py ...`).
Writes runs/experiments/NAME/{RUN.jsonl, NAME.png, NAME.md}; `--out results`
updates the committed tables. The runs are defined in experiments/lib/runs.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments.lib, from any working directory

from experiments.lib.cli import experiment, main  # noqa: E402

if __name__ == "__main__":
    main(experiment)
