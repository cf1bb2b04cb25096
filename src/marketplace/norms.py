"""Batch normalisation that a market can hold: statistics per product, no running averages.

`nn.BatchNorm2d` is refused by `Market` (docs/algorithm.md section 9): inside a
market one vendor sees the products of every upstream vendor stacked along
the batch dimension, so its batch statistics mix products that are mostly
discarded, and its running averages (used at inference) are polluted by
them. `ProductBatchNorm2d` has no buffers, so the market accepts it:

- `group=B` (the training batch): statistics over each block of B examples,
  which inside `Market.evaluate` is exactly one product's batch
  (products are stacked product-major, [P * B, ...]). Inference
  (`market(x)`) uses the statistics of each block of B test examples.
- `group=None`: statistics over everything the module is given, i.e. over
  all the upstream products a vendor consumes: what a plain BatchNorm in
  training mode would compute inside the market (the "mixed" variant).

Neither keeps running averages, so neither reproduces the articles'
mechanism exactly (running statistics polluted by discarded products); see
docs/experiments.md for what the comparison does and does not show.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

# Names accepted by `TrainConfig.norm`; "batch" is torch's BatchNorm2d, which a Market refuses.
NORM_NAMES = ("instance", "batch", "product-batch", "mixed-batch")


class ProductBatchNorm2d(nn.Module):
    """BatchNorm over blocks of `group` examples (one product's batch), with affine weights, no buffers.

    x: [N, C, H, W] -> [N, C, H, W]. N need not be a multiple of `group`:
    the last block is then smaller (inference on an arbitrary set).
    """

    def __init__(self, channels: int, group: int | None, eps: float = 1e-5):
        super().__init__()
        if group is not None and group < 1:
            raise ValueError(f"Invalid group: {group!r} (must be >= 1 or None)")
        self.channels, self.group, self.eps = channels, group, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group or n, n)
        blocks = -(-n // g)
        pad = blocks * g - n
        xf = x.float()
        if pad:  # zero rows, masked out of the statistics below
            xf = torch.cat([xf, xf.new_zeros(pad, c, h, w)])
        xs = xf.reshape(blocks, g, c, h, w)
        if pad:
            mask = torch.ones(blocks * g, device=x.device)
            mask[n:] = 0
            mask = mask.reshape(blocks, g, 1, 1, 1)
            count = mask.sum(dim=1, keepdim=True) * (h * w)  # [blocks, 1, 1, 1, 1]
            mean = (xs * mask).sum(dim=(1, 3, 4), keepdim=True) / count
            var = (((xs - mean) * mask) ** 2).sum(dim=(1, 3, 4), keepdim=True) / count
        else:
            mean = xs.mean(dim=(1, 3, 4), keepdim=True)
            var = xs.var(dim=(1, 3, 4), keepdim=True, unbiased=False)
        out = (xs - mean) * torch.rsqrt(var + self.eps)
        out = out * self.weight.float().reshape(1, 1, c, 1, 1) + self.bias.float().reshape(1, 1, c, 1, 1)
        return out.reshape(blocks * g, c, h, w)[:n].to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.channels}, group={self.group}, eps={self.eps}"


def norm_layer(name: str, batch: int) -> str | Callable[[int], nn.Module]:
    """The norm factory for `models.beautiful_mnist(norm=...)` from a `TrainConfig.norm` name."""
    if name == "product-batch":
        return functools.partial(ProductBatchNorm2d, group=batch)
    if name == "mixed-batch":
        return functools.partial(ProductBatchNorm2d, group=None)
    if name in ("instance", "batch"):
        return name
    raise ValueError(f"unknown norm {name!r}; choose from {', '.join(NORM_NAMES)}")
