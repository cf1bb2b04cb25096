"""A GroupNorm ResNet split into 4 specs: V2 against backprop SGD and Adam, equal steps and equal wall time.

    nice -n 5 uv run python experiments/resnet.py --steps 300                      # the CPU run in results/resnet/
    uv run python experiments/resnet.py --arch resnet18 --dataset cifar10 --device cuda --steps 2000 --batch 256

Writes results/resnet/{v2,sgd,adam}.jsonl, resnet.json, resnet.md and resnet.png
(`--report-only` redraws the last two). See src/marketplace/experiments/resnet.py.
"""

import sys

from marketplace.experiments.resnet import main

if __name__ == "__main__":
    main(sys.argv[1:])
