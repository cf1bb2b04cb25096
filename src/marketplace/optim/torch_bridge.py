"""The torch.optim bridge: V2's estimate stepped by any torch optimizer and lr scheduler.

It is an update rule like V1 and V2 (`vendors`, `step(losses, paths)`,
`steps`, `lr`, `state_dict()`), so the trainer, checkpoints and the data
axis of distributed training use it like V2. Its state holds the torch
optimizer's and the scheduler's, so a resumed run is exact.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import MarketplaceError
from .base import MarketOptimizer
from .checks import check_positive
from .forward_gradient import ForwardGradient, write_grads

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


class TorchMarketOptimizer(MarketOptimizer):
    """The estimate of a ForwardGradient written into `.grad`, then `optimizer.step()` and `scheduler.step()`.

    estimator: a ForwardGradient over the market; optimizer: a torch
    optimizer over the market's parameters; scheduler: stepped once per step,
    skipped steps included (or None); clip: clip the estimate's global norm
    before the step (None: no clipping). on_nonfinite: as for every market
    optimizer. With `SGD(lr)`, no scheduler and direction "unit" it is V2,
    bit for bit.
    """

    algorithm = "v2"

    def __init__(self, estimator: ForwardGradient, optimizer: torch.optim.Optimizer, scheduler=None,
                 clip: float | None = None, on_nonfinite: str = "raise"):
        super().__init__(estimator, on_nonfinite)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.clip = None if clip is None else check_positive("clip", clip)

    @property
    def lr(self) -> list[float]:
        """The current learning rate of each spec (from its param group)."""
        groups = self.estimator.groups or [0] * self.market.depth
        return [self.optimizer.param_groups[g]["lr"] for g in groups]

    def _update(self, losses: torch.Tensor, paths: torch.Tensor, closure=None) -> None:
        write_grads(self.market, self.estimator.estimate(losses, paths))
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.market.parameters(), self.clip)
        self.optimizer.step()

    def _after_step(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def _state(self) -> dict[str, Any]:
        tensors: dict[str, torch.Tensor] = {}
        torch_state = flatten_state({"optimizer": self.optimizer.state_dict(),
                                     "scheduler": self.scheduler.state_dict() if self.scheduler else None},
                                    tensors)
        return {"torch_optimizer": type(self.optimizer).__name__, "torch_state": torch_state,
                **{TENSOR_KEY + k.lstrip("/"): v for k, v in tensors.items()}}

    def _check_state(self, state: dict[str, Any]) -> None:
        if "torch_state" not in state:
            raise MarketplaceError("the state was saved by V2 without a torch optimizer: "
                                   "resume with the options it was trained with")
        saved = state.get("torch_optimizer", type(self.optimizer).__name__)
        if saved != type(self.optimizer).__name__:
            raise MarketplaceError(f"the state was saved with torch optimizer {saved}, not "
                                   f"{type(self.optimizer).__name__}: resume with the same one")

    def _load_state(self, state: dict[str, Any]) -> None:
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

    def __repr__(self) -> str:
        return (f"TorchMarketOptimizer({type(self.optimizer).__name__}, lr={self.lr[0]:.4g}, "
                f"scheduler={type(self.scheduler).__name__ if self.scheduler else None}, {self.estimator!r})")
