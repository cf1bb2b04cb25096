"""The surface every market optimizer offers, as a type: what a trainer, a worker or a server may rely on."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from ..market import Market
from ..vendors import Vendors


@runtime_checkable
class MarketOptimizerProtocol(Protocol):
    """Ask for `vendors`, evaluate the market with them, tell `step(losses, paths)`.

    V1, V2, AdaptiveV2 and TorchMarketOptimizer implement it through
    `MarketOptimizer`; anything else with this surface trains as they do.
    """

    market: Market
    skipped: int  # steps whose update a non-finite loss skipped

    @property
    def vendors(self) -> Vendors: ...

    @property
    def steps(self) -> int: ...

    @property
    def lr(self) -> list[float]: ...

    def step(self, losses: torch.Tensor, paths: torch.Tensor, closure: Any = None) -> bool: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
