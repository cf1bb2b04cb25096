"""Experiment 1 (docs/algorithm.md section 7): MNIST digits, then Fashion-MNIST dress as a new class 10.

The checkpoint's 10-way head is widened to 11 outputs (`pretrain.widen_head`):
the new row is the mean of the old rows, so its logit is the mean of the
digit logits and never the strict maximum, and every digit prediction stays
what it was. Published (100,000 steps): dress 86% validation, digits
96.2% -> 95.2%.
"""

from __future__ import annotations

import torch

from .. import data
from .stream import ContinualData

NAME = "dress"
DRESS = 3  # the Fashion-MNIST class
TITLE = "continual learning: digits, then dress as class 10"
DEFAULT_CHECKPOINT = "runs/digits.safetensors"
EXCLUDE: tuple[int, ...] = ()  # pre-training: plain `marketplace train` on all ten digits
TARGET = "dress >= 90%, digits -0.5 points at most"
FEW_SHOT = "first 240 digits, first 16 dresses"


def load(data_dir: str | None, device: torch.device) -> ContinualData:
    """Digits as the old classes, Fashion-MNIST dresses as class 10."""
    x, y = data.load_data("mnist", "train", data_dir, device)
    vx, vy = data.load_data("mnist", "test", data_dir, device)
    fx, fy = data.load_data("fashion-mnist", "train", data_dir, device)
    fvx, fvy = data.load_data("fashion-mnist", "test", data_dir, device)
    new, vnew = fy == DRESS, fvy == DRESS
    label = lambda n: torch.full((n,), 10, dtype=torch.int64, device=device)
    return ContinualData(x, y, fx[new], label(int(new.sum())), vx, vy, fvx[vnew], label(int(vnew.sum())),
                         classes=11, old_name="digits", new_name="dress")
