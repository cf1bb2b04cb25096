"""Draw JSON-lines run logs: accuracy and loss against steps and wall time (PNG), a table of milestones.

    uv run python experiments/plot.py runs/experiments/norm --out norm.png --table norm.md
    uv run python experiments/plot.py runs/a.jsonl runs/b.jsonl     # logs of `marketplace train --log`

The logs of a continual run are drawn by `marketplace continual plot`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments.lib, from any working directory

from experiments.lib.cli import main, plot  # noqa: E402

if __name__ == "__main__":
    main(plot)
