"""What a record learns from: per-request losses and the rules that filter them.

A record's loss is one example's loss along one path. These are the pure
pieces `ContinualLearner` composes: the default per-example cross-entropy,
the loss relative to the base weights (the learner's baseline), and the
outlier rule.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import MarketplaceError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OutlierRule = Callable[[torch.Tensor], torch.Tensor]


def per_example_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits [n, C], labels int64 [n] -> cross-entropy of each example, float32 [n]."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[-1]):
        raise MarketplaceError(f"labels must lie in [0, {logits.shape[-1]}), "
                               f"got {int(labels.min())}..{int(labels.max())}")
    return F.cross_entropy(logits.float(), labels.to(logits.device), reduction="none")


def drop_beyond_std(k: float) -> OutlierRule:
    """An outlier rule: keep losses within k standard deviations of their mean.

    Returns a function losses [K] -> bool keep mask [K].
    """
    if not isinstance(k, (int, float)) or not k > 0:
        raise ValueError(f"Invalid outlier threshold: {k!r} (must be > 0 standard deviations)")

    def keep(losses: torch.Tensor) -> torch.Tensor:
        losses = losses.double()
        std = losses.std(unbiased=False)
        if not bool(std > 0):
            return torch.ones_like(losses, dtype=torch.bool)
        return (losses - losses.mean()).abs() <= k * std

    keep.__name__ = f"drop_beyond_{k:g}_std"
    return keep


def relative_losses(loss_fn: LossFn, logits: torch.Tensor, labels: torch.Tensor,
                    base: torch.Tensor | None = None) -> torch.Tensor:
    """loss_fn(logits, labels), minus loss_fn(base, labels) when the base weights' logits are given.

    The difference is what a path's perturbation did to each example: the
    example's own difficulty, shared by both terms, cancels.
    """
    losses = loss_fn(logits, labels)
    return losses if base is None else losses - loss_fn(base, labels)
