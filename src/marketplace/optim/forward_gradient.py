"""The market's forward-only estimate: ask for vendors, tell the losses of their paths.

    estimator = ForwardGradient(market, optimizer, probe_scale=0.03, seed=0)
    for x, y in batches:
        out = market.evaluate(x, estimator.vendors)                    # ask
        estimator.backward(path_losses(out.products, y), out.paths)   # tell: sets p.grad, no autograd
        optimizer.step(); scheduler.step()

Every market optimizer (V1, V2, AdaptiveV2, the torch.optim bridge) is an
update rule over one of these. The estimate has the sign and scale of a
gradient: with direction "unit" it is -G_k, V2's unit direction, so
`torch.optim.SGD(lr=eta)` makes exactly V2's step; momentum, Adam, weight
decay, clipping, schedulers and param groups then work as with backprop.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..errors import MarketplaceError
from ..functional import ATTRIBUTIONS, check_losses, descent_directions, vendor_attribution
from ..lowrank import LowRankVendors, draw_lowrank_vendors
from ..market import Market
from ..vendors import SeededVendors, Vendors, draw_vendors, reconciled_delta
from .checks import check_choice, check_per_spec, check_positive, check_seed

__all__ = ["DIRECTIONS", "ForwardGradient", "check_market", "draw_market_vendors", "market_vendors", "spec_groups", "write_grads"]

DIRECTIONS = ("unit", "raw")


def check_market(market: Any) -> Market:
    if not isinstance(market, Market):
        raise TypeError(f"expected a Market, got {type(market).__name__}")
    return market


def spec_groups(market: Market, optimizer: torch.optim.Optimizer) -> list[int]:
    """The index of the optimizer's param group that holds each spec's trainable parameters.

    A spec's probe width follows one learning rate, so all its parameters
    must sit in one group. Frozen ones (requires_grad=False) are never
    perturbed: the optimizer may hold them or not.
    """
    where = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
    groups = []
    for k, spec in enumerate(market.specs):
        found = {where.get(id(p)) for p in spec.parameters() if p.requires_grad}
        if None in found:
            raise MarketplaceError(f"spec {k} has trainable parameters the optimizer does not hold")
        if len(found) > 1:
            raise MarketplaceError(f"spec {k}'s parameters are split over param groups {sorted(found)}: "
                                   "its probe width follows one learning rate")
        groups.append(found.pop() if found else 0)
    return groups


def draw_market_vendors(market: Market, seed: int, step: int, sigma: Sequence[float], cache: bool = True,
                        stream: int = 0, antithetic: bool = False) -> Vendors:
    """The vendors of `step` for `market`: dense, or low-rank from the same seeds when market.rank > 0."""
    if market.rank:
        return draw_lowrank_vendors(seed, step, market.vendor_counts, sigma, market.lowrank_plans, cache, stream,
                                    antithetic)
    return draw_vendors(seed, step, market.vendor_counts, sigma, cache, stream, antithetic)


def market_vendors(market: Market, seeded: SeededVendors) -> Vendors:
    """Seeds received from elsewhere (another rank, a client) expanded as `market` expands its own."""
    return LowRankVendors(seeded, market.lowrank_plans) if market.rank else seeded


@torch.no_grad()
def write_grads(market: Market, estimate: Sequence[torch.Tensor]) -> None:
    """Set every parameter's `.grad` from the flat estimate [numel_k] of its spec."""
    for k, d in enumerate(estimate):
        params = dict(market.specs[k].named_parameters())
        for name, g in market.layouts[k].split(d).items():
            params[name].grad = g.to(params[name].dtype).clone()


class ForwardGradient:
    """Draws the vendors of each step and turns the losses of their paths into a direction.

    The probe width sigma_k follows a learning rate, sigma_k = lr_k *
    probe_scale (V2's rule, so annealing the rate narrows the probes too):
    the lr of the torch `optimizer`'s param group holding spec k, or
    `rates()` (how V1 and V2 tie the probes to their own rate). Or give
    probe_width (one sigma, or one per spec) to fix sigma on its own, as Adam
    needs (its lr is no step length).
    attribution: "zscore" (V2) or "rank" (centred ranks, robust to outliers).
    direction: "unit" (V2's G, per spec or per_spec=False for the whole
    model) or "raw" (R_k / sigma_k, whose length carries the spread).
    antithetic: vendors in mirrored pairs (delta, -delta). cache_deltas: keep
    each step's deltas between the forward pass and the update, or
    regenerate them from the seeds.
    The vendors of step t are a pure function of (seed, t) and the widths.
    """

    def __init__(self, market: Market, optimizer: torch.optim.Optimizer | None = None, *,
                 probe_scale: float = 0.03, probe_width: float | Sequence[float] | None = None, seed: int = 0,
                 attribution: str = "zscore", direction: str = "unit", per_spec: bool = True,
                 antithetic: bool = False, cache_deltas: bool = True,
                 rates: Callable[[], Sequence[float]] | None = None):
        self.market = check_market(market)
        self.attribution = check_choice("attribution", attribution, ATTRIBUTIONS)
        self.direction = check_choice("direction", direction, DIRECTIONS)
        self.probe_scale = check_positive("probe_scale", probe_scale)
        self.probe_width = None if probe_width is None else check_per_spec("probe_width", probe_width, market.depth, "widths")
        if self.probe_width is None and optimizer is None and rates is None:
            raise ValueError("give the optimizer (the probe width follows its lr) or a fixed probe_width")
        self.seed = check_seed(seed)
        self.optimizer, self._rates = optimizer, rates
        self.groups = spec_groups(market, optimizer) if optimizer is not None else None
        self.per_spec, self.antithetic, self.cache_deltas = bool(per_spec), bool(antithetic), cache_deltas
        self.steps = 0
        self._vendors: SeededVendors | None = None

    # -- ask -----------------------------------------------------------------

    def rates(self) -> list[float]:
        """The learning rate each spec's probe width follows."""
        if self._rates is not None:
            return list(self._rates())
        return [self.optimizer.param_groups[g]["lr"] for g in self.groups]

    def probe_widths(self) -> list[float]:
        """sigma_k: fixed, or lr_k * probe_scale with the current lr."""
        if self.probe_width is not None:
            return list(self.probe_width)
        return [r * self.probe_scale for r in self.rates()]

    @property
    def vendors(self) -> Vendors:
        """This step's vendors, drawn on first use (after a scheduler has set the lr); low-rank in a low-rank market."""
        if self._vendors is None:
            self._vendors = draw_market_vendors(self.market, self.seed, self.steps, self.probe_widths(),
                                                self.cache_deltas, antithetic=self.antithetic)
        return self._vendors

    def seeds(self) -> tuple[torch.Tensor, ...]:
        """The seeds of this step's vendors, without drawing them (their widths may still change)."""
        if self._vendors is not None:
            return self._vendors.seeds
        return draw_vendors(self.seed, self.steps, self.market.vendor_counts, [0.0] * self.market.depth,
                            cache=False).seeds

    # -- tell ----------------------------------------------------------------

    @torch.no_grad()
    def reconciled(self, losses: torch.Tensor, paths: torch.Tensor) -> list[torch.Tensor]:
        """R_k = sum_j a_kj delta_kj, flat [numel_k]: the vendors' deltas weighted by their paths' losses.

        losses: [P], evaluated with `self.vendors`; paths: int64 [P, N]
        (checked by the caller).
        """
        market, device, vendors = self.market, self.market.device, self.vendors
        shaped = ATTRIBUTIONS[self.attribution](losses.detach())
        per_vendor = vendor_attribution(shaped, paths, market.vendor_counts)
        return [reconciled_delta(vendors, k, a.to(device), market.layouts[k].numel, device)
                for k, a in enumerate(per_vendor)]

    @torch.no_grad()
    def estimate(self, losses: torch.Tensor, paths: torch.Tensor) -> list[torch.Tensor]:
        """The gradient-signed estimate of each spec, flat [numel_k]; a NaN loss raises NonFiniteLossError."""
        check_losses(losses, paths)
        return descent_directions(self.reconciled(losses, paths), self.vendors.sigma, self.direction,
                                  self.per_spec)

    @torch.no_grad()
    def backward(self, losses: torch.Tensor, paths: torch.Tensor) -> None:
        """Set every parameter's `.grad` to the estimate, then move on to the next step's vendors.

        A NaN or infinite loss raises NonFiniteLossError and leaves .grad alone.
        """
        write_grads(self.market, self.estimate(losses, paths))
        self.advance()

    def advance(self) -> None:
        """Count the step; the next vendors are drawn when first asked for."""
        self.steps += 1
        self._vendors = None

    # -- saving and restoring ------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "seed": self.seed, "probe_scale": self.probe_scale,
                "probe_width": self.probe_width, "attribution": self.attribution, "direction": self.direction,
                "per_spec": self.per_spec, "antithetic": self.antithetic,
                "vendor_counts": list(self.market.vendor_counts), "seeds": [s.clone() for s in self.seeds()],
                **({"rank": self.market.rank} if self.market.rank else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state; settings a state saved by an older version lacks keep their current values."""
        if list(state["vendor_counts"]) != list(self.market.vendor_counts):
            raise MarketplaceError(f"the state was saved for market {state['vendor_counts']}, "
                                   f"not {list(self.market.vendor_counts)}")
        if int(state.get("rank", 0)) != self.market.rank:
            raise MarketplaceError(f"the state was saved with rank {int(state.get('rank', 0))} vendors, "
                                   f"not rank {self.market.rank}: resume with the same --rank")
        self.steps, self.seed = int(state["steps"]), int(state["seed"])
        self.probe_scale = float(state.get("probe_scale", self.probe_scale))
        width = state.get("probe_width", self.probe_width)
        self.probe_width = None if width is None else [float(w) for w in width]
        self.attribution = state.get("attribution", self.attribution)
        self.direction = state.get("direction", self.direction)
        self.per_spec = bool(state.get("per_spec", self.per_spec))
        self.antithetic = bool(state.get("antithetic", self.antithetic))
        self._vendors = None
        if "seeds" in state and not all(torch.equal(a.cpu(), torch.as_tensor(b).cpu())
                                        for a, b in zip(self.seeds(), state["seeds"])):
            raise MarketplaceError("the saved seeds differ from the ones this version derives: incompatible state")

    def __repr__(self) -> str:
        width = f"probe_width={self.probe_width}" if self.probe_width else f"probe_scale={self.probe_scale}"
        return (f"ForwardGradient({width}, attribution={self.attribution!r}, direction={self.direction!r}, "
                f"antithetic={self.antithetic}, seed={self.seed}, steps={self.steps})")

