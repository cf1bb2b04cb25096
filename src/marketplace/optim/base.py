"""What every market optimizer shares: per-spec rates, seeds, steps, state.

Subclasses supply `probe_widths` (how far vendors stray) and `_update` (how
the losses of the paths move the base weights); the base class owns `step`,
the redrawing of vendors and `state_dict()` / `load_state_dict()`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import torch

from ..errors import MarketplaceError
from ..functional import NonFiniteLossError, check_losses
from ..market import Market
from ..vendors import SeededVendors, Vendors, draw_vendors

Closure = Callable[[Vendors], tuple[torch.Tensor, torch.Tensor]]


def _check_positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number > 0)")
    return float(value)


class MarketOptimizer:
    """Base class: holds the market, a learning rate per spec and the current vendors.

    lr: one rate, or one per spec. decay: lr <- lr * (1 - decay) after every
    step. seed: the master seed; the vendors of step t are a pure function of
    (seed, t). cache_deltas: keep each step's deltas in memory between the
    forward pass and the update, or regenerate them from the seeds.
    on_nonfinite: "raise" a NonFiniteLossError, or "skip" the update with a
    warning, when a path's loss is NaN or infinite.
    """

    algorithm = "base"

    def __init__(
        self,
        market: Market,
        lr: float | Sequence[float],
        decay: float = 0.0,
        seed: int = 0,
        cache_deltas: bool = True,
        on_nonfinite: str = "raise",
    ):
        if not isinstance(market, Market):
            raise TypeError(f"expected a Market, got {type(market).__name__}")
        rates = [lr] * market.depth if isinstance(lr, (int, float)) else list(lr)
        if len(rates) != market.depth:
            raise ValueError(f"Invalid lr: {len(rates)} rates for a market of {market.depth} specs")
        if not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"Invalid decay: {decay!r} (must be in [0, 1))")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"Invalid seed: {seed!r} (must be an int)")
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"Invalid on_nonfinite: {on_nonfinite!r} (must be 'raise' or 'skip')")
        self.market = market
        self.lr = [_check_positive("learning rate", r) for r in rates]
        self.decay = float(decay)
        self.seed = seed
        self.cache_deltas = cache_deltas
        self.on_nonfinite = on_nonfinite
        self.steps = 0
        self.skipped = 0
        self.vendors: SeededVendors = self._draw()

    # -- what subclasses define ----------------------------------------------

    def probe_widths(self) -> list[float]:
        """sigma_k, the half-width of the uniform deltas of spec k."""
        raise NotImplementedError

    def _update(self, losses: torch.Tensor, paths: torch.Tensor, closure: Closure | None) -> None:
        raise NotImplementedError

    def _decay(self) -> None:
        """lr <- lr * (1 - decay), after every step."""
        self.lr = [r * (1.0 - self.decay) for r in self.lr]

    def _hyper(self) -> dict[str, Any]:
        """Hyper-parameters beyond lr/decay/seed that state_dict must restore."""
        return {}

    def _load_hyper(self, state: dict[str, Any]) -> None:
        pass

    # -- the step ------------------------------------------------------------

    def _draw(self) -> SeededVendors:
        return draw_vendors(self.seed, self.steps, self.market.vendor_counts, self.probe_widths(), self.cache_deltas)

    def step(self, losses: torch.Tensor, paths: torch.Tensor, closure: Closure | None = None) -> bool:
        """Update the base weights from the loss of every path, then redraw vendors.

        losses: [P], the loss of each path evaluated with `self.vendors`;
        paths: int64 [P, N]. closure(vendors) -> (losses, paths) re-evaluates
        the market on the same batch (only the adaptive variant needs it).
        Returns False when a non-finite loss made the step skip its update.
        """
        try:
            check_losses(losses, paths)
            self._update(losses.detach(), paths, closure)
            updated = True
        except NonFiniteLossError as e:
            if self.on_nonfinite == "raise":
                raise
            warnings.warn(f"step {self.steps} skipped: {e}", RuntimeWarning, stacklevel=2)
            self.skipped += 1
            updated = False
        self.advance()
        return updated

    def advance(self) -> None:
        """End a step: decay the rate, count the step, draw the next vendors.

        `step` calls it after its update; a caller that applies an update
        computed elsewhere (the distributed replica axis) calls it instead.
        """
        self._decay()
        self.steps += 1
        self.vendors = self._draw()

    # -- saving and restoring ------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "steps": self.steps,
            "skipped": self.skipped,
            "lr": list(self.lr),
            "decay": self.decay,
            "seed": self.seed,
            "vendor_counts": list(self.market.vendor_counts),
            "seeds": [s.clone() for s in self.vendors.seeds],
            **self._hyper(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("algorithm") != self.algorithm:
            raise MarketplaceError(
                f"the state was saved by a {state.get('algorithm')!r} optimizer, not {self.algorithm!r}"
            )
        if list(state["vendor_counts"]) != list(self.market.vendor_counts):
            raise MarketplaceError(
                f"the state was saved for market {state['vendor_counts']}, not {list(self.market.vendor_counts)}"
            )
        self.steps = int(state["steps"])
        self.skipped = int(state.get("skipped", 0))
        self.lr = [float(r) for r in state["lr"]]
        self.decay = float(state["decay"])
        self.seed = int(state["seed"])
        self._load_hyper(state)
        self.vendors = self._draw()
        if "seeds" in state and not all(
            torch.equal(a.cpu(), torch.as_tensor(b).cpu()) for a, b in zip(self.vendors.seeds, state["seeds"])
        ):
            raise MarketplaceError("the saved seeds differ from the ones this version derives: incompatible state")

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self._hyper().items())
        lr = self.lr[0] if len(set(self.lr)) == 1 else self.lr
        return f"{type(self).__name__}(lr={lr}, decay={self.decay}, seed={self.seed}{', ' + hyper if hyper else ''})"
