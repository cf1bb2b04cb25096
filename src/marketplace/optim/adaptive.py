"""V2 with an adaptive learning rate found by a second forward pass (ALGORITHM.md section 6)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import MarketplaceError
from ..functional import best_path, check_losses
from ..rng import derive_seeds, uniform_pm1
from .v2 import V2, reconciled_directions

RATE_STREAM = 4


@dataclass(eq=False)
class RateVendors:
    """Vendor j of spec k moves along G_k by lr_k * (1 + r_{k,j}); r_{k,0} = 0."""

    directions: list[torch.Tensor]  # G_k [numel]
    steps: list[torch.Tensor]  # lr_k * (1 + r_k) [M_k]
    sampling_seed: int

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.steps)

    def deltas(self, k: int, numel: int, device: torch.device) -> torch.Tensor:
        return self.steps[k].to(device)[:, None] * self.directions[k][None, :]


def rate_scales(seed: int, step: int, counts, meta_lr: float) -> list[torch.Tensor]:
    """r_{k,j} ~ uniform(-meta_lr, meta_lr), r_{k,0} = 0, from (seed, step): [M_k] per spec."""
    seeds = derive_seeds(seed, RATE_STREAM, step, count=len(counts))
    return [
        torch.cat([torch.zeros(1), meta_lr * uniform_pm1(seeds[k : k + 1], m - 1)[0]])
        for k, m in enumerate(counts)
    ]


class AdaptiveV2(V2):
    """V2 whose per-spec rates are tuned every step by a market over step lengths.

    meta_lr: the half-width of the relative rate changes tried; it decays by
    (1 - decay) per step instead of the learning rate. `step` needs the
    closure that re-evaluates the market on the same batch.
    """

    algorithm = "adaptive-v2"

    def __init__(self, market, lr=0.1, meta_lr: float = 0.1, **kwargs):
        if not isinstance(meta_lr, (int, float)) or not 0 < meta_lr < 1:
            raise ValueError(f"Invalid meta_lr: {meta_lr!r} (must be in (0, 1))")
        self.meta_lr = float(meta_lr)
        super().__init__(market, lr, **kwargs)

    def _update(self, losses, paths, closure=None) -> None:
        if closure is None:
            raise MarketplaceError("AdaptiveV2.step needs a closure that re-evaluates the market")
        directions = reconciled_directions(self, losses, paths, self.per_spec)
        counts = self.market.vendor_counts
        scales = rate_scales(self.seed, self.steps, counts, self.meta_lr)
        steps = [self.lr[k] * (1 + scales[k]) for k in range(len(counts))]
        sampling_seed = int(derive_seeds(self.seed, RATE_STREAM, self.steps, len(counts))[0])
        losses2, paths2 = closure(RateVendors(directions, steps, sampling_seed))
        check_losses(losses2, paths2)
        best = best_path(losses2, paths2).tolist()
        for k, j in enumerate(best):
            self.lr[k] = float(steps[k][j])
            self.market.add_(k, self.lr[k] * directions[k])

    def _decay(self) -> None:
        self.meta_lr *= 1.0 - self.decay

    def _hyper(self):
        return {**super()._hyper(), "meta_lr": self.meta_lr}

    def _load_hyper(self, state):
        super()._load_hyper(state)
        self.meta_lr = float(state["meta_lr"])
