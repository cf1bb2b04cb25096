"""V2: reconcile the losses of every path into one direction (docs/algorithm.md section 5)."""

from __future__ import annotations

import torch

from ..functional import unit_directions
from .base import RateOptimizer


class V2(RateOptimizer):
    """theta_k <- theta_k + lr_k * G_k, G from standardized losses of all paths.

    probe_scale: vendors probe at lr * probe_scale. per_spec: normalise each
    spec's direction on its own (True) or the whole model's at once (False).
    """

    algorithm = "v2"

    def __init__(self, market, lr=0.1, probe_scale: float = 0.1, per_spec: bool = True, **kwargs):
        super().__init__(market, lr, probe_scale=probe_scale, per_spec=per_spec,
                         **kwargs)

    def directions(self, losses: torch.Tensor, paths: torch.Tensor) -> list[torch.Tensor]:
        """G_k, flat [numel_k]: the unit direction of each spec for this step's vendors."""
        return unit_directions(self.estimator.reconciled(losses, paths), per_spec=self.per_spec)

    def _update(self, losses: torch.Tensor, paths: torch.Tensor, closure=None) -> None:
        for k, g in enumerate(self.directions(losses, paths)):
            self.market.add_(k, g, alpha=self.lr[k])  # as torch.optim.SGD rounds: SGD reproduces V2

    def _hyper(self):
        return {**super()._hyper(), "probe_scale": self.probe_scale, "per_spec": self.per_spec}
