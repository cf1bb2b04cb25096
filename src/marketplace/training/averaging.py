"""Weights averaged over the last steps: what a run evaluates when most of each step is noise.

A V2 step has the length of its rate and lies mostly outside the
directions its losses are about (docs/alignment.md), so at a constant rate
the weights wander around where they are heading. An exponential moving
average over about N steps (`torch.optim.swa_utils.AveragedModel`, decay
1 - 1/N) keeps the steady drift, about N steps late, and cancels much of
the wander. The market keeps stepping from its own weights; the average is
what is evaluated and, in a checkpoint, what inference loads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

AVERAGE = "average/"  # prefix of the average's tensors in a checkpoint's optimizer section


def weight_average(model: nn.Module, steps: int) -> AveragedModel:
    """An exponential moving average of `model`'s weights over about `steps` updates, starting at them."""
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(1.0 - 1.0 / steps), use_buffers=True)
    averaged.update_parameters(model)  # the first update copies: the average starts at the weights
    return averaged


def average_state(averaged: AveragedModel) -> dict[str, torch.Tensor]:
    """The average as checkpoint entries: prefixed keys without dots (a checkpoint splits keys at the first)."""
    return {AVERAGE + k.replace(".", "/"): v for k, v in averaged.state_dict().items()}


def pop_average(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Remove the average's entries from a checkpoint's optimizer section; the AveragedModel state they held."""
    return {k[len(AVERAGE):].replace("/", "."): state.pop(k) for k in list(state) if k.startswith(AVERAGE)}


def averaged_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The averaged model's own weights (its `state_dict` keys) from a checkpoint's optimizer section; {} if none."""
    prefix = AVERAGE + "module/"
    return {k[len(prefix):].replace("/", "."): v for k, v in state.items() if k.startswith(prefix)}
