"""V2 with an adaptive learning rate found by a second forward pass (docs/algorithm.md section 6).

The rate kept from step to step is the best candidate of one batch, so it
random-walks; rate_bounds and rate_smoothing stabilise it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import MarketplaceError
from ..functional import best_path, check_losses
from ..lowrank import direction_parts
from ..rng import derive_seeds, uniform_pm1
from .checks import check_fraction, renamed
from .v2 import V2

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

    def lowrank_parts(self, k: int, plan, device: torch.device):
        """In a low-rank market: x G once per factored layer, scaled per vendor (no [M, numel] deltas)."""
        return direction_parts(self.directions[k].to(device), self.steps[k].to(device), plan)


def rate_scales(seed: int, step: int, counts, meta_lr: float) -> list[torch.Tensor]:
    """r_{k,j} ~ uniform(-meta_lr, meta_lr), r_{k,0} = 0, from (seed, step): [M_k] per spec."""
    seeds = derive_seeds(seed, RATE_STREAM, step, count=len(counts))
    return [
        torch.cat([torch.zeros(1), meta_lr * uniform_pm1(seeds[k : k + 1], m - 1)[0]])
        for k, m in enumerate(counts)
    ]


def check_rate_bounds(bounds) -> tuple[float, float] | None:
    """None, or (lo, hi) with 0 < lo <= 1 <= hi: the start rate must lie inside its own bounds."""
    if bounds is None:
        return None
    if (not isinstance(bounds, (tuple, list)) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
            or not 0 < bounds[0] <= 1 <= bounds[1]):
        raise ValueError(f"Invalid rate_bounds: {bounds!r} (must be (lo, hi) with 0 < lo <= 1 <= hi)")
    return float(bounds[0]), float(bounds[1])


def check_rate_smoothing(beta) -> float:
    return check_fraction("rate_smoothing", beta)


def bounded_steps(steps: torch.Tensor, lr0: float, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Candidate step lengths clamped to [lo * lr0, hi * lr0], so the market only tries rates it may keep."""
    if bounds is None:
        return steps
    return steps.clamp(bounds[0] * lr0, bounds[1] * lr0)


def smoothed_rate(kept: float, chosen: float, beta: float) -> float:
    """beta * kept + (1 - beta) * chosen: one batch's winner moves the rate by (1 - beta) of its pull.

    beta = 0 keeps the chosen rate itself (AdaptiveV2 as published).
    """
    if beta == 0:
        return chosen
    return beta * kept + (1.0 - beta) * chosen


class AdaptiveV2(V2):
    """V2 whose per-spec rates are tuned every step by a market over step lengths.

    meta_lr: the half-width of the relative rate changes tried; it shrinks
    by (1 - meta_lr_decay) per step (what the old argument `decay` meant
    here); lr_decay (default 0) decays the kept rate as in V2. `step` needs
    the closure that re-evaluates the market on the same batch.

    The rate otherwise random-walks on one batch's noise. rate_bounds=(lo, hi)
    keeps each spec's rate within [lo, hi] times its initial rate (the
    candidates are clamped, so the step taken is one the market tried).
    rate_smoothing=beta keeps an exponential moving average of the chosen
    rates; the step itself still uses the chosen rate, the one evaluated.
    The defaults (None, 0) are the unstabilised rate.
    """

    algorithm = "adaptive"
    legacy_decay = "meta_lr_decay"

    def __init__(self, market, lr=0.1, meta_lr: float = 0.1, rate_bounds: tuple[float, float] | None = None,
                 rate_smoothing: float = 0.0, *, meta_lr_decay: float | None = None, decay: float | None = None,
                 **kwargs):
        if not isinstance(meta_lr, (int, float)) or not 0 < meta_lr < 1:
            raise ValueError(f"Invalid meta_lr: {meta_lr!r} (must be in (0, 1))")
        name, meta_lr_decay = renamed("meta_lr_decay", meta_lr_decay, "decay", decay, 0.0)
        self.meta_lr_decay = check_fraction(name, meta_lr_decay)
        self.meta_lr = float(meta_lr)
        self.rate_bounds = check_rate_bounds(rate_bounds)
        self.rate_smoothing = check_rate_smoothing(rate_smoothing)
        super().__init__(market, lr, **kwargs)
        self.lr0 = list(self.lr)  # what rate_bounds are relative to

    def _update(self, losses, paths, closure=None) -> None:
        if closure is None:
            raise MarketplaceError("AdaptiveV2.step needs a closure that re-evaluates the market")
        directions = self.directions(losses, paths)
        counts = self.market.vendor_counts
        scales = rate_scales(self.seed, self.steps, counts, self.meta_lr)
        steps = [bounded_steps(self.lr[k] * (1 + scales[k]), self.lr0[k], self.rate_bounds)
                 for k in range(len(counts))]
        sampling_seed = int(derive_seeds(self.seed, RATE_STREAM, self.steps, len(counts))[0])
        losses2, paths2 = closure(RateVendors(directions, steps, sampling_seed))
        check_losses(losses2, paths2)
        best = best_path(losses2, paths2).tolist()
        for k, j in enumerate(best):
            chosen = float(steps[k][j])
            self.market.add_(k, chosen * directions[k])
            self.lr[k] = smoothed_rate(self.lr[k], chosen, self.rate_smoothing)

    def _after_step(self) -> None:
        super()._after_step()
        self.meta_lr *= 1.0 - self.meta_lr_decay

    def _hyper(self):
        bounds = list(self.rate_bounds) if self.rate_bounds else None
        return {**super()._hyper(), "meta_lr": self.meta_lr, "meta_lr_decay": self.meta_lr_decay,
                "rate_bounds": bounds, "rate_smoothing": self.rate_smoothing, "lr0": list(self.lr0)}

    def _load_state(self, state):
        super()._load_state(state)
        self.meta_lr = float(state["meta_lr"])
        self.meta_lr_decay = float(self._saved(state, "meta_lr_decay", 0.0))
        # a state saved before the stabilised rate existed: keep the constructor's settings
        self.rate_bounds = check_rate_bounds(state.get("rate_bounds", self.rate_bounds))
        self.rate_smoothing = check_rate_smoothing(state.get("rate_smoothing", self.rate_smoothing))
        self.lr0 = [float(r) for r in state.get("lr0", self.lr0)]
