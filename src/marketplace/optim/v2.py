"""V2: reconcile the losses of every path into one direction (docs/algorithm.md section 5)."""

from __future__ import annotations

import torch

from ..functional import reconcile, standardized_attribution, unit_directions, vendor_attribution
from .base import MarketOptimizer


def reconciled_directions(optimizer: MarketOptimizer, losses: torch.Tensor, paths: torch.Tensor,
                          per_spec: bool) -> list[torch.Tensor]:
    """G_k for the optimizer's current vendors, from the losses of the paths."""
    market, device = optimizer.market, optimizer.market.device
    attribution = vendor_attribution(standardized_attribution(losses), paths, market.vendor_counts)
    reconciled = [
        reconcile(a.to(device), optimizer.vendors.deltas(k, market.layouts[k].numel, device))
        for k, a in enumerate(attribution)
    ]
    return unit_directions(reconciled, per_spec=per_spec)


class V2(MarketOptimizer):
    """theta_k <- theta_k + lr_k * G_k, G from standardized losses of all paths.

    probe_scale: vendors probe at lr * probe_scale. per_spec: normalise each
    spec's direction on its own (True) or the whole model's at once (False).
    """

    algorithm = "v2"

    def __init__(self, market, lr=0.1, probe_scale: float = 0.1, per_spec: bool = True, **kwargs):
        if not isinstance(probe_scale, (int, float)) or not probe_scale > 0:
            raise ValueError(f"Invalid probe_scale: {probe_scale!r} (must be > 0)")
        self.probe_scale = float(probe_scale)
        self.per_spec = bool(per_spec)
        super().__init__(market, lr, **kwargs)

    def probe_widths(self) -> list[float]:
        return [r * self.probe_scale for r in self.lr]

    def _update(self, losses: torch.Tensor, paths: torch.Tensor, closure=None) -> None:
        directions = reconciled_directions(self, losses, paths, self.per_spec)
        for k, g in enumerate(directions):
            self.market.add_(k, g, alpha=self.lr[k])  # as torch.optim.SGD rounds: SGD reproduces V2

    def _hyper(self):
        return {"probe_scale": self.probe_scale, "per_spec": self.per_spec}

    def _load_hyper(self, state):
        self.probe_scale = float(state["probe_scale"])
        self.per_spec = bool(state["per_spec"])
