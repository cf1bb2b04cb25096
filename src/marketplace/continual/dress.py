"""Experiment 1 (docs/algorithm.md section 7): MNIST digits, then Fashion-MNIST dresses shown as the digit 3.

The dresses join the ten digit classes under the label 3, so the head keeps
its ten outputs and a dress counts as learned when the model calls it a 3.
`dress_class10` is the variant that gives them an eleventh output instead.
Published (100,000 steps): dress 86% validation, digits 96.2% -> 95.2%.
"""

from __future__ import annotations

import torch

from .. import data
from .stream import ContinualData

NAME = "dress"
DRESS = 3  # the Fashion-MNIST class
LABEL = 3  # the digit the dresses are shown as
TITLE = "continual learning: digits, then dresses shown as the digit 3"
DEFAULT_CHECKPOINT = "runs/digits.safetensors"
EXCLUDE: tuple[int, ...] = ()  # pre-training: plain `marketplace train` on all ten digits
TARGET = "dress >= 86%, digits -0.5 points at most"
TARGET_NEW = 86.0  # new-class validation accuracy to reach (the article: 86% at 100,000 steps)
FEW_SHOT = "first 240 digits, first 16 dresses"


# The article's figures (its runs drew from the first 240 digits and 16 dresses only), for the plots.
ARTICLE = {"learn_new_accuracy": [(28_000, 100.0)], "val_new_accuracy": [(100_000, 86.0)],
           "val_old_accuracy": [(0, 96.2), (100_000, 95.2)]}


def load_with_label(label: int, classes: int, data_dir: str | None, device: torch.device) -> ContinualData:
    """Digits as the old classes, Fashion-MNIST dresses labelled `label` as the new one."""
    x, y = data.load_data("mnist", "train", data_dir, device)
    vx, vy = data.load_data("mnist", "test", data_dir, device)
    fx, fy = data.load_data("fashion-mnist", "train", data_dir, device)
    fvx, fvy = data.load_data("fashion-mnist", "test", data_dir, device)
    new, vnew = fy == DRESS, fvy == DRESS
    labels = lambda n: torch.full((n,), label, dtype=torch.int64, device=device)
    return ContinualData(x, y, fx[new], labels(int(new.sum())), vx, vy, fvx[vnew], labels(int(vnew.sum())),
                         classes=classes, old_name="digits", new_name="dress")


def load(data_dir: str | None, device: torch.device) -> ContinualData:
    """Digits, then dresses labelled 3 (ten outputs)."""
    return load_with_label(LABEL, 10, data_dir, device)
