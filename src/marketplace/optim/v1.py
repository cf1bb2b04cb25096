"""V1: keep the best path, mutate around it (docs/algorithm.md section 4)."""

from __future__ import annotations

import torch

from ..functional import best_path
from .base import MarketOptimizer


class V1(MarketOptimizer):
    """theta_k <- theta_k + delta_{k, best path[k]}; the jitter is the learning rate."""

    algorithm = "v1"

    def probe_widths(self) -> list[float]:
        return list(self.lr)

    def _update(self, losses: torch.Tensor, paths: torch.Tensor, closure=None) -> None:
        best = best_path(losses, paths)
        market, device = self.market, self.market.device
        for k, j in enumerate(best.tolist()):
            if j:  # the leader's delta is zero
                numel = market.layouts[k].numel
                market.add_(k, self.vendors.deltas(k, numel, device)[j])
