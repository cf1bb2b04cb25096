"""What every market optimizer shares: the estimator, the step, the non-finite policy, the state.

A market optimizer is an update rule over one `ForwardGradient`: the
estimator draws the vendors (ask) and attributes the losses of their paths
(tell); the rule supplies `_update` (how that moves the weights) and
`_after_step` (what changes between steps: a decaying rate, a scheduler).
`RateOptimizer` adds the learning rate per spec that V1, V2 and AdaptiveV2
keep themselves.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import torch

from ..errors import MarketplaceError
from ..functional import NonFiniteLossError, check_losses
from ..market import Market
from ..vendors import SeededVendors, Vendors
from .checks import check_choice, check_fraction, check_per_spec, check_seed, renamed
from .forward_gradient import ForwardGradient, check_market

Closure = Callable[[Vendors], tuple[torch.Tensor, torch.Tensor]]

NONFINITE = ("raise", "skip")  # what a step does with a NaN or infinite path loss

# Old spellings of algorithm names, still read from saved states, configs and the command line.
ALGORITHM_ALIASES = {"adaptive-v2": "adaptive", "torch-v2": "v2"}


def canonical_algorithm(name: str) -> str:
    """The one name of an algorithm, given it or an old spelling ("adaptive-v2" -> "adaptive")."""
    return ALGORITHM_ALIASES.get(name, name)


class MarketOptimizer:
    """Base class: an update rule over a ForwardGradient, with one non-finite policy.

    on_nonfinite: "raise" a NonFiniteLossError, or "skip" the update with a
    warning, when a path's loss is NaN or infinite; either way the weights
    are not touched.
    """

    algorithm = "base"

    def __init__(self, estimator: ForwardGradient, on_nonfinite: str = "raise"):
        if not isinstance(estimator, ForwardGradient):
            raise TypeError(f"expected a ForwardGradient, got {type(estimator).__name__}")
        self.estimator = estimator
        self.market: Market = estimator.market
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, NONFINITE)
        self.skipped = 0

    # -- what update rules define --------------------------------------------

    @property
    def lr(self) -> list[float]:
        """The learning rate of each spec."""
        raise NotImplementedError

    def _update(self, losses: torch.Tensor, paths: torch.Tensor, closure: Closure | None) -> None:
        """Move the base weights from the (finite) losses of this step's paths."""
        raise NotImplementedError

    def _after_step(self) -> None:
        """What changes between steps, before the next vendors are drawn."""

    def _state(self) -> dict[str, Any]:
        """What state_dict saves beyond the estimator's state."""
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        pass

    # -- the estimator's surface ---------------------------------------------

    @property
    def vendors(self) -> SeededVendors:
        """This step's vendors: evaluate the market with them, then call `step`."""
        return self.estimator.vendors

    @property
    def steps(self) -> int:
        return self.estimator.steps

    @property
    def seed(self) -> int:
        return self.estimator.seed

    @property
    def cache_deltas(self) -> bool:
        return self.estimator.cache_deltas

    @property
    def per_spec(self) -> bool:
        return self.estimator.per_spec

    @property
    def probe_scale(self) -> float:
        return self.estimator.probe_scale

    def probe_widths(self) -> list[float]:
        """sigma_k, the half-width of the uniform deltas of spec k."""
        return self.estimator.probe_widths()

    # -- the step ------------------------------------------------------------

    def step(self, losses: torch.Tensor, paths: torch.Tensor, closure: Closure | None = None) -> bool:
        """Update the base weights from the loss of every path, then move on to the next vendors.

        losses: [P], the loss of each path evaluated with `self.vendors`;
        paths: int64 [P, N]. closure(vendors) -> (losses, paths) re-evaluates
        the market on the same batch (only the adaptive rule needs it).
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
        """End a step: `_after_step` (decay, schedule), count it, draw the next vendors when asked.

        `step` calls it after its update; a caller that applies an update
        computed elsewhere (the distributed replica axis) calls it instead.
        """
        self._after_step()
        self.estimator.advance()

    # -- saving and restoring ------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "skipped": self.skipped, **self.estimator.state_dict(), **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = canonical_algorithm(str(state.get("algorithm")))
        if saved != self.algorithm:
            raise MarketplaceError(f"the state was saved by a {state.get('algorithm')!r} optimizer, not "
                                   f"{self.algorithm!r}: resume with the options it was trained with")
        self._check_state(state)
        self.estimator.load_state_dict(state)
        self.skipped = int(state.get("skipped", 0))
        self._load_state(state)

    def _check_state(self, state: dict[str, Any]) -> None:
        """Refuse a state of the same algorithm saved by another kind of rule (the torch bridge's)."""
        if "torch_state" in state:
            raise MarketplaceError(f"the state was saved through a torch optimizer, not by {type(self).__name__}: "
                                   "resume with the options it was trained with")


class RateOptimizer(MarketOptimizer):
    """A rule that keeps its own learning rate per spec: lr_k <- lr_k * (1 - lr_decay) after every step.

    lr: one rate, or one per spec; the vendors probe at lr * probe_scale.
    seed: the master seed; the vendors of step t are a pure function of
    (seed, t). cache_deltas: keep each step's deltas in memory between the
    forward pass and the update, or regenerate them from the seeds.
    decay: the old name of lr_decay (AdaptiveV2 reads it as meta_lr_decay).
    """

    legacy_decay = "lr_decay"  # what the old argument and state key "decay" meant for this rule

    def __init__(self, market: Market, lr: float | Sequence[float], lr_decay: float | None = None, seed: int = 0,
                 cache_deltas: bool = True, on_nonfinite: str = "raise", *, probe_scale: float = 1.0,
                 per_spec: bool = True, decay: float | None = None, attribution: str = "zscore"):
        check_market(market)
        name, lr_decay = renamed("lr_decay", lr_decay, "decay", decay, 0.0)
        self.lr_decay = check_fraction(name, lr_decay)
        self._lr = check_per_spec("learning rate", lr, market.depth, "rates")
        estimator = ForwardGradient(market, rates=lambda: self._lr, probe_scale=probe_scale, per_spec=per_spec,
                                    seed=check_seed(seed), cache_deltas=cache_deltas, attribution=attribution)
        super().__init__(estimator, on_nonfinite)

    @property
    def lr(self) -> list[float]:
        return self._lr

    @lr.setter
    def lr(self, rates: Sequence[float]) -> None:
        self._lr = [float(r) for r in rates]

    @property
    def decay(self) -> float:
        """The old name of `legacy_decay` (lr_decay here, meta_lr_decay for AdaptiveV2)."""
        return getattr(self, self.legacy_decay)

    @decay.setter
    def decay(self, value: float) -> None:
        setattr(self, self.legacy_decay, check_fraction("decay", value))

    def _after_step(self) -> None:
        self._lr = [r * (1.0 - self.lr_decay) for r in self._lr]

    def _hyper(self) -> dict[str, Any]:
        """The hyper-parameters beyond the estimator's that a rule shows and saves."""
        return {"lr_decay": self.lr_decay}

    def _state(self) -> dict[str, Any]:
        return {"lr": list(self._lr), **self._hyper()}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._lr = [float(r) for r in state["lr"]]
        self.lr_decay = float(self._saved(state, "lr_decay", 0.0))

    def _saved(self, state: dict[str, Any], key: str, default: Any) -> Any:
        """state[key], or for a state saved before the decays had their own names, the old "decay"."""
        if key in state:
            return state[key]
        if key == self.legacy_decay and "decay" in state:
            return state["decay"]
        return default

    def __repr__(self) -> str:
        lr = self._lr[0] if len(set(self._lr)) == 1 else self._lr
        hyper = ", ".join(f"{k}={v}" for k, v in self._hyper().items())
        return f"{type(self).__name__}(lr={lr}, seed={self.seed}, {hyper})"
