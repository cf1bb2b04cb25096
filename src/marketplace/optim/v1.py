"""V1: keep the best path, mutate around it (docs/algorithm.md section 4)."""

from __future__ import annotations

import torch

from ..functional import best_path
from ..vendors import vendor_delta
from .base import RateOptimizer


class V1(RateOptimizer):
    """theta_k <- theta_k + delta_{k, best path[k]}; the jitter is the learning rate (probe_scale 1)."""

    algorithm = "v1"

    def __init__(self, market, lr, lr_decay: float | None = None, seed: int = 0, cache_deltas: bool = True,
                 on_nonfinite: str = "raise", *, decay: float | None = None):
        super().__init__(market, lr, lr_decay, seed, cache_deltas, on_nonfinite, decay=decay)

    def _update(self, losses: torch.Tensor, paths: torch.Tensor, closure=None) -> None:
        best = best_path(losses, paths)
        market, device = self.market, self.market.device
        for k, j in enumerate(best.tolist()):
            if j:  # the leader's delta is zero
                market.add_(k, vendor_delta(self.vendors, k, j, market.layouts[k].numel, device))
