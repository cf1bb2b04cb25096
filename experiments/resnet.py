"""A GroupNorm ResNet split into 4 specs: V2 against backprop SGD and Adam, equal steps and equal wall time.

    nice -n 5 uv run python experiments/resnet.py --steps 300                      # the CPU run of results/resnet/ (with --out results/resnet)
    uv run python experiments/resnet.py --arch resnet18 --dataset cifar10 --device cuda --steps 2000 --batch 256

Writes runs/resnet/{v2,sgd,adam}.jsonl, resnet.json, resnet.md and resnet.png
(`--report-only` redraws the last two). See experiments/lib/resnet.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments.lib, from any working directory

from experiments.lib.resnet import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
