"""The data axis (docs/algorithm.md section 8): same vendors, different examples.

Every rank holds the same weights and draws the same vendors (the same
seeds, a pure function of (seed, step)). Rank r evaluates every path on its
shard of the batch; one all-reduce of the P shard-weighted path losses gives
every rank the losses of the full batch, and every rank makes the same
update through the optimizer's own `step(losses, paths)`. Per step a rank
sends P floats, whatever the size of the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import MarketplaceError
from ..optim import MarketOptimizer
from ..vendors import Vendors
from .collectives import Collectives

# evaluate(vendors) -> (losses [P] averaged over this rank's examples, paths [P, N])
Evaluate = Callable[[Vendors], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class AxisStep:
    """What one distributed step saw: the losses it acted on, their paths, and whether it updated."""

    losses: torch.Tensor
    paths: torch.Tensor
    updated: bool


def shard_bounds(batch: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous shard of `batch` examples; sizes differ by at most one."""
    q, r = divmod(batch, world_size)
    start = rank * q + min(rank, r)
    return start, start + q + (rank < r)


class DataAxis:
    """Split each batch across ranks; sum the path losses with one all-reduce of P floats."""

    name = "data"

    def __init__(self, comm: Collectives):
        self.comm = comm

    def check(self, optimizer: MarketOptimizer, batch: int) -> None:
        """Every optimizer works on the data axis; every rank needs at least one example."""
        if batch < self.comm.world_size:
            raise MarketplaceError(f"batch {batch} is smaller than the {self.comm.world_size} ranks of the "
                                   "data axis: every rank needs at least one example", fields=("batch",))

    def shard(self, batch: int) -> slice:
        """This rank's examples of a batch."""
        return slice(*shard_bounds(batch, self.comm.rank, self.comm.world_size))

    def vendors(self, optimizer: MarketOptimizer) -> Vendors:
        """The same vendors on every rank: the optimizer's own."""
        return optimizer.vendors

    def reduce_losses(self, losses: torch.Tensor, batch: int) -> torch.Tensor:
        """Full-batch path losses from every rank's shard means: sum_r (n_r / B) L_r, one all-reduce."""
        start, stop = shard_bounds(batch, self.comm.rank, self.comm.world_size)
        return self.comm.all_reduce(losses * ((stop - start) / batch), "step")

    def step(self, optimizer: MarketOptimizer, evaluate: Evaluate, batch: int) -> AxisStep:
        """Evaluate this rank's shard, all-reduce the losses, let the optimizer update.

        A second forward pass (the adaptive rate) is all-reduced the same way.
        A NaN on one rank becomes a NaN in every rank's sum, so all ranks
        raise (or skip) together.
        """
        def closure(vendors: Vendors) -> tuple[torch.Tensor, torch.Tensor]:
            losses, paths = evaluate(vendors)
            return self.reduce_losses(losses, batch), paths

        losses, paths = closure(optimizer.vendors)
        updated = optimizer.step(losses, paths, closure=closure)
        return AxisStep(losses, paths, updated)
