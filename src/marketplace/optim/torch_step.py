"""A market optimizer made of a ForwardGradient, a torch optimizer and a scheduler.

It has the surface of the other market optimizers (`vendors`, `step(losses,
paths)`, `steps`, `lr`, `state_dict()`), so the trainer, checkpoints and
the data axis of distributed training use it like V2. Its state holds the
torch optimizer's and the scheduler's, so a resumed run is exact.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..errors import MarketplaceError
from ..functional import NonFiniteLossError
from .estimator import ForwardGradient

TENSOR_KEY = "torch_tensor/"  # state_dict keys of the torch optimizer's tensors (no dots: checkpoint keys)


def flatten_state(state: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """A torch state_dict as JSON-able data, its tensors moved into `tensors` under dotted names."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {"__dict__": [[k, flatten_state(v, tensors, f"{prefix}/{k}")] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        return [flatten_state(v, tensors, f"{prefix}/{i}") for i, v in enumerate(state)]
    return state


def unflatten_state(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `flatten_state` (dict keys keep their type: param ids stay ints)."""
    if isinstance(data, dict) and "__tensor__" in data:
        return tensors[data["__tensor__"]]
    if isinstance(data, dict) and "__dict__" in data:
        return {k: unflatten_state(v, tensors) for k, v in data["__dict__"]}
    if isinstance(data, list):
        return [unflatten_state(v, tensors) for v in data]
    return data


class TorchMarketOptimizer:
    """V2's estimate driven by any torch.optim optimizer and lr scheduler.

    estimator: a ForwardGradient over the market; optimizer: a torch
    optimizer over the market's parameters; scheduler: stepped once per step
    (or None); clip: clip the estimate's global norm before the step (None:
    no clipping). on_nonfinite: "raise" or "skip" a step with a NaN loss.
    """

    algorithm = "torch-v2"

    def __init__(self, estimator: ForwardGradient, optimizer: torch.optim.Optimizer, scheduler=None,
                 clip: float | None = None, on_nonfinite: str = "raise"):
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"Invalid on_nonfinite: {on_nonfinite!r} (must be 'raise' or 'skip')")
        if clip is not None and not clip > 0:
            raise ValueError(f"Invalid clip: {clip!r} (must be > 0)")
        self.estimator, self.optimizer, self.scheduler = estimator, optimizer, scheduler
        self.market, self.clip, self.on_nonfinite = estimator.market, clip, on_nonfinite
        self.skipped = 0

    @property
    def steps(self) -> int:
        return self.estimator.steps

    @property
    def seed(self) -> int:
        return self.estimator.seed

    @property
    def vendors(self):
        return self.estimator.vendors

    @property
    def lr(self) -> list[float]:
        """The current learning rate of each spec (from its param group)."""
        groups = self.estimator.groups or [0] * self.market.depth
        return [self.optimizer.param_groups[g]["lr"] for g in groups]

    def probe_widths(self) -> list[float]:
        return self.estimator.probe_widths()

    def step(self, losses: torch.Tensor, paths: torch.Tensor, closure=None) -> bool:
        """Estimate, optimizer step, scheduler step. Returns False when a NaN loss skipped the update."""
        try:
            self.estimator.backward(losses, paths)
        except NonFiniteLossError as e:
            if self.on_nonfinite == "raise":
                raise
            warnings.warn(f"step {self.steps} skipped: {e}", RuntimeWarning, stacklevel=2)
            self.skipped += 1
            self.estimator.advance()
            self._schedule()
            return False
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.market.parameters(), self.clip)
        self.optimizer.step()
        self._schedule()
        return True

    def _schedule(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        tensors: dict[str, torch.Tensor] = {}
        torch_state = flatten_state({"optimizer": self.optimizer.state_dict(),
                                     "scheduler": self.scheduler.state_dict() if self.scheduler else None},
                                    tensors)
        return {"algorithm": self.algorithm, "skipped": self.skipped, **self.estimator.state_dict(),
                "torch_state": torch_state, **{TENSOR_KEY + k.lstrip("/"): v for k, v in tensors.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("algorithm") != self.algorithm:
            raise MarketplaceError(f"the state was saved by a {state.get('algorithm')!r} optimizer, not "
                                   f"{self.algorithm!r}: resume with the options it was trained with")
        tensors = {"/" + k[len(TENSOR_KEY):]: v for k, v in state.items() if k.startswith(TENSOR_KEY)}
        torch_state = unflatten_state(state["torch_state"], tensors)
        try:
            self.optimizer.load_state_dict(torch_state["optimizer"])
        except (ValueError, KeyError) as e:
            raise MarketplaceError(f"the saved torch optimizer state does not fit this optimizer: {e}") from e
        if (torch_state["scheduler"] is None) != (self.scheduler is None):
            raise MarketplaceError("the state was saved with a different lr schedule: resume with the same one")
        if self.scheduler is not None:
            saved = dict(torch_state["scheduler"])
            if "lr_lambdas" in saved:  # the schedule is the caller's (its horizon included); only its progress is saved
                saved["lr_lambdas"] = [None] * len(saved["lr_lambdas"])
            self.scheduler.load_state_dict(saved)
        self.estimator.load_state_dict(state)
        self.skipped = int(state.get("skipped", 0))

    def __repr__(self) -> str:
        return (f"TorchMarketOptimizer({type(self.optimizer).__name__}, lr={self.lr[0]:.4g}, "
                f"scheduler={type(self.scheduler).__name__ if self.scheduler else None}, {self.estimator!r})")
