"""The market's forward-only estimate, written into `.grad` for any torch.optim optimizer.

    estimator = ForwardGradient(market, optimizer, probe_scale=0.03, seed=0)
    for x, y in batches:
        out = market.evaluate(x, estimator.vendors)
        estimator.backward(path_losses(out.products, y), out.paths)   # sets p.grad, no autograd
        optimizer.step(); scheduler.step()

The estimate has the sign and scale of a gradient: with direction "unit" it
is -G_k, V2's unit direction, so `torch.optim.SGD(lr=eta)` makes exactly
V2's step; momentum, Adam, weight decay, clipping, schedulers and param
groups then work as they do with backprop.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import MarketplaceError
from ..functional import ATTRIBUTIONS, check_losses, descent_directions, reconcile, vendor_attribution
from ..market import Market
from ..vendors import SeededVendors, draw_vendors

DIRECTIONS = ("unit", "raw")


def spec_groups(market: Market, optimizer: torch.optim.Optimizer) -> list[int]:
    """The index of the optimizer's param group that holds each spec's parameters.

    A spec's probe width follows one learning rate, so all its parameters
    must sit in one group.
    """
    where = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
    groups = []
    for k, spec in enumerate(market.specs):
        found = {where.get(id(p)) for p in spec.parameters()}
        if None in found:
            raise MarketplaceError(f"spec {k} has parameters the optimizer does not hold")
        if len(found) > 1:
            raise MarketplaceError(f"spec {k}'s parameters are split over param groups {sorted(found)}: "
                                   "its probe width follows one learning rate")
        groups.append(found.pop() if found else 0)
    return groups


class ForwardGradient:
    """Draws the vendors of each step and turns their path losses into `.grad`.

    optimizer: the torch optimizer whose current learning rate sets the probe
    width, sigma_k = lr_k * probe_scale (V2's rule, so annealing the rate
    narrows the probes too); or give probe_width (one sigma, or one per
    spec) to fix sigma on its own, as Adam needs (its lr is no step length).
    attribution: "zscore" (V2) or "rank" (centred ranks, robust to outliers).
    direction: "unit" (V2's G, per spec or per_spec=False for the whole
    model) or "raw" (R_k / sigma_k, whose length carries the spread).
    antithetic: vendors in mirrored pairs (delta, -delta).
    The vendors of step t are a pure function of (seed, t) and the widths.
    """

    def __init__(self, market: Market, optimizer: torch.optim.Optimizer | None = None, *,
                 probe_scale: float = 0.03, probe_width: float | Sequence[float] | None = None, seed: int = 0,
                 attribution: str = "zscore", direction: str = "unit", per_spec: bool = True,
                 antithetic: bool = False, cache_deltas: bool = True):
        if not isinstance(market, Market):
            raise TypeError(f"expected a Market, got {type(market).__name__}")
        if attribution not in ATTRIBUTIONS:
            raise ValueError(f"Invalid attribution: {attribution!r} (choose from {', '.join(ATTRIBUTIONS)})")
        if direction not in DIRECTIONS:
            raise ValueError(f"Invalid direction: {direction!r} (choose from {', '.join(DIRECTIONS)})")
        if not isinstance(probe_scale, (int, float)) or not probe_scale > 0:
            raise ValueError(f"Invalid probe_scale: {probe_scale!r} (must be > 0)")
        if probe_width is not None:
            widths = [probe_width] * market.depth if isinstance(probe_width, (int, float)) else list(probe_width)
            if len(widths) != market.depth or not all(isinstance(w, (int, float)) and w > 0 for w in widths):
                raise ValueError(f"Invalid probe_width: {probe_width!r} (one number > 0, or one per spec)")
            probe_width = [float(w) for w in widths]
        elif optimizer is None:
            raise ValueError("give the optimizer (the probe width follows its lr) or a fixed probe_width")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"Invalid seed: {seed!r} (must be an int)")
        self.market, self.optimizer = market, optimizer
        self.groups = spec_groups(market, optimizer) if optimizer is not None else None
        self.probe_scale, self.probe_width, self.seed = float(probe_scale), probe_width, seed
        self.attribution, self.direction, self.per_spec = attribution, direction, bool(per_spec)
        self.antithetic, self.cache_deltas = bool(antithetic), cache_deltas
        self.steps = 0
        self._vendors: SeededVendors | None = None

    def probe_widths(self) -> list[float]:
        """sigma_k: fixed, or lr_k * probe_scale with the optimizer's current lr."""
        if self.probe_width is not None:
            return list(self.probe_width)
        return [self.optimizer.param_groups[g]["lr"] * self.probe_scale for g in self.groups]

    @property
    def vendors(self) -> SeededVendors:
        """This step's vendors, drawn on first use (after the scheduler has set the lr)."""
        if self._vendors is None:
            self._vendors = draw_vendors(self.seed, self.steps, self.market.vendor_counts, self.probe_widths(),
                                         self.cache_deltas, antithetic=self.antithetic)
        return self._vendors

    @torch.no_grad()
    def estimate(self, losses: torch.Tensor, paths: torch.Tensor) -> list[torch.Tensor]:
        """The descent direction of each spec, flat [numel_k], from the losses of this step's paths."""
        check_losses(losses, paths)
        market, device, vendors = self.market, self.market.device, self.vendors
        shaped = ATTRIBUTIONS[self.attribution](losses.detach())
        per_vendor = vendor_attribution(shaped, paths, market.vendor_counts)
        reconciled = [reconcile(a.to(device), vendors.deltas(k, market.layouts[k].numel, device))
                      for k, a in enumerate(per_vendor)]
        return descent_directions(reconciled, vendors.sigma, self.direction, self.per_spec)

    @torch.no_grad()
    def backward(self, losses: torch.Tensor, paths: torch.Tensor) -> None:
        """Set every parameter's `.grad` to the estimate, then move on to the next step's vendors.

        losses: [P], evaluated with `self.vendors`; paths: int64 [P, N]. A
        NaN or infinite loss raises NonFiniteLossError and leaves .grad alone.
        """
        directions = self.estimate(losses, paths)
        for k, d in enumerate(directions):
            params = dict(self.market.specs[k].named_parameters())
            for name, g in self.market.layouts[k].split(d).items():
                params[name].grad = g.to(params[name].dtype).clone()
        self.advance()

    def advance(self) -> None:
        """Count the step; the next vendors are drawn when first asked for."""
        self.steps += 1
        self._vendors = None

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "seed": self.seed, "probe_scale": self.probe_scale,
                "probe_width": self.probe_width, "attribution": self.attribution, "direction": self.direction,
                "per_spec": self.per_spec, "antithetic": self.antithetic,
                "vendor_counts": list(self.market.vendor_counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["vendor_counts"]) != list(self.market.vendor_counts):
            raise MarketplaceError(f"the state was saved for market {state['vendor_counts']}, "
                                   f"not {list(self.market.vendor_counts)}")
        self.steps, self.seed = int(state["steps"]), int(state["seed"])
        self.probe_scale = float(state["probe_scale"])
        self.probe_width = None if state["probe_width"] is None else [float(w) for w in state["probe_width"]]
        self.attribution, self.direction = state["attribution"], state["direction"]
        self.per_spec, self.antithetic = bool(state["per_spec"]), bool(state["antithetic"])
        self._vendors = None

    def __repr__(self) -> str:
        width = f"probe_width={self.probe_width}" if self.probe_width else f"probe_scale={self.probe_scale}"
        return (f"ForwardGradient({width}, attribution={self.attribution!r}, direction={self.direction!r}, "
                f"antithetic={self.antithetic}, seed={self.seed}, steps={self.steps})")
