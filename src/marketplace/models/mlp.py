"""A ReLU MLP, one spec per Linear layer."""

from __future__ import annotations

from torch import nn


def mlp(sizes: list[int]) -> list[nn.Module]:
    """A ReLU MLP with one spec per Linear layer, e.g. mlp([784, 128, 10]) -> 2 specs."""
    specs = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers = [nn.Flatten()] if i == 0 else []
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
        specs.append(nn.Sequential(*layers))
    return specs
