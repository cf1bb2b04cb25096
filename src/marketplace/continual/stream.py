"""The streams of a continual-learning experiment: old and new classes, drawn per step from seeds."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import MEAN, STD
from ..rng import derive_seeds

STREAM_OLD, STREAM_NEW, STREAM_AUGMENT = 11, 12, 13  # seed streams of the experiment's sampling


@dataclass
class ContinualData:
    """Training streams and validation sets of old and new classes, images [n, 1, 28, 28]."""

    old_x: torch.Tensor
    old_y: torch.Tensor
    new_x: torch.Tensor
    new_y: torch.Tensor
    val_old_x: torch.Tensor
    val_old_y: torch.Tensor
    val_new_x: torch.Tensor
    val_new_y: torch.Tensor
    classes: int  # outputs of the head
    old_name: str
    new_name: str



def shift_augment(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels each way, filling with the background.

    x: [B, 1, H, W], normalised. A cheap stand-in for the article's
    rotation + perspective augmentation.
    """
    b, _, h, w = x.shape
    background = (0.0 - MEAN) / STD
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=background)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = dx[:, None] + torch.arange(w, device=x.device)  # [B, W]
    out = padded[torch.arange(b, device=x.device)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    return out.unsqueeze(1)


def step_indices(seed: int, stream: int, step: int, pool: int, count: int) -> torch.Tensor:
    """`count` indices in [0, pool), with replacement: a pure function of (seed, stream, step)."""
    g = torch.Generator().manual_seed(int(derive_seeds(seed, stream, step)[0]) & (2**63 - 1))
    return torch.randint(0, pool, (count,), generator=g)
