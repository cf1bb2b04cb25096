"""The measurement protocol: MNIST, 4x4x4, batch 128, 1,500 steps, seeds 0/1/2.

Accuracy at equal steps does not depend on the machine's load. Runs plain V2
and each variant of experiments/lib/protocol.py
(VARIANTS), prints a markdown table of mean and spread of the final test
accuracy (all 10,000 test images) and writes runs/protocol/protocol_cpu.{json,md}
with the machine named (`--out results/protocol` adds to the committed table). Finished runs are read back, not run again.

    uv run python experiments/protocol.py --jobs 2                    # two runs at once, one thread each
    uv run python experiments/protocol.py --variants v2 --seeds 0     # one run
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments.lib, from any working directory

from experiments.lib.protocol import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
