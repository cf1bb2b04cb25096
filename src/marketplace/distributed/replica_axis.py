"""The replica axis (docs/algorithm.md section 8): different vendors, the same examples.

Rank r draws its vendors from stream r of the shared (seed, step)
(`draw_vendors(..., stream=r)`; rank 0's are the optimizer's own), so a
world of W ranks probes W times as many vendors per step. Every rank
evaluates the full batch on its own vendors, then one all-gather swaps:

- V2: the vendors' seeds and the per-vendor attribution sums a_{k,j} of
  the rank's own standardized losses; every rank rebuilds the other ranks'
  deltas from the seeds and applies G_k = unit(sum_r sum_j a^r_{k,j} delta^r_{k,j}).
- V1: the rank's best loss and the seeds of its best path; every rank
  applies the deltas of the best path over all ranks (ties: lowest rank).

Only seeds and a few floats cross the wire, never a delta. The sums run
in rank order on every rank, so the updates are bit-identical. In a
low-rank market (`Market(rank=)`) the same seeds expand as low-rank factors.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import MarketplaceError
from ..functional import NonFiniteLossError, check_losses, standardized_attribution
from ..functional import unit_directions, vendor_attribution
from ..optim import V1, V2, AdaptiveV2, MarketOptimizer
from ..optim.forward_gradient import draw_market_vendors, market_vendors
from ..vendors import SeededVendors, Vendors, reconciled_delta, vendor_delta
from .collectives import Collectives
from .data_axis import AxisStep, Evaluate


def _float_bits(x: torch.Tensor) -> torch.Tensor:
    """float32 values as int64 carrying their exact bit patterns (to share one int64 message)."""
    return x.float().contiguous().view(torch.int32).to(torch.int64)


def _bits_float(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.int32).view(torch.float32)


class ReplicaAxis:
    """Each rank probes its own vendors on the whole batch; ranks swap seeds and attributions."""

    name = "replica"

    def __init__(self, comm: Collectives):
        self.comm = comm

    def check(self, optimizer: MarketOptimizer, batch: int) -> None:
        if isinstance(optimizer, AdaptiveV2):
            raise MarketplaceError("the adaptive algorithm runs on the data axis only")
        if not isinstance(optimizer, (V1, V2)):
            raise MarketplaceError(f"the replica axis supports v1 and v2, not {type(optimizer).__name__}")

    def shard(self, batch: int) -> slice:
        """Every rank evaluates the whole batch."""
        return slice(0, batch)

    def vendors(self, optimizer: MarketOptimizer) -> Vendors:
        """This rank's vendors: stream `rank` of the optimizer's (seed, step)."""
        if self.comm.rank == 0:
            return optimizer.vendors
        return draw_market_vendors(optimizer.market, optimizer.seed, optimizer.steps, optimizer.probe_widths(),
                                   optimizer.cache_deltas, stream=self.comm.rank)

    def step(self, optimizer: MarketOptimizer, evaluate: Evaluate, batch: int | None = None) -> AxisStep:
        """Evaluate this rank's vendors, swap (seeds, attributions), apply the combined update."""
        self.check(optimizer, batch or 0)
        vendors = self.vendors(optimizer)
        losses, paths = evaluate(vendors)
        try:
            check_losses(losses, paths)
            finite = 1
        except NonFiniteLossError:
            finite = 0
        if isinstance(optimizer, V2):
            updated = self._reconcile(optimizer, vendors, losses, paths, finite)
        else:
            updated = self._keep_best(optimizer, vendors, losses, paths, finite)
        # The bookkeeping of MarketOptimizer.step after its update.
        optimizer.advance()
        return AxisStep(losses, paths, updated)

    # -- V2 --------------------------------------------------------------------

    def _reconcile(self, opt: V2, vendors: Vendors, losses, paths, finite: int) -> bool:
        market = opt.market
        counts = market.vendor_counts
        attribution = vendor_attribution(standardized_attribution(losses), paths, counts) if finite \
            else [torch.zeros(m) for m in counts]
        # One message per rank: [finite flag, seeds (sum M_k), attribution bits (sum M_k)], int64.
        message = torch.cat([torch.tensor([finite]), torch.cat(vendors.seeds),
                             _float_bits(torch.cat(attribution).cpu())])
        gathered = self.comm.all_gather(message, "step")
        if not self._all_finite(opt, gathered[:, 0]):
            return False
        total = sum(counts)
        device, sigma = market.device, opt.probe_widths()
        reconciled = []
        for k, m in enumerate(counts):
            numel, lo = market.layouts[k].numel, sum(counts[:k])
            r_k = None
            for r in range(self.comm.world_size):
                a = _bits_float(gathered[r, 1 + total + lo : 1 + total + lo + m])
                seeds = gathered[r, 1:1 + total].split(counts)
                source = vendors if r == self.comm.rank else \
                    market_vendors(market, SeededVendors(tuple(seeds), tuple(sigma), cache=False))
                term = reconciled_delta(source, k, a.to(device), numel, device)
                r_k = term if r_k is None else r_k + term
            reconciled.append(r_k)
        for k, g in enumerate(unit_directions(reconciled, per_spec=opt.per_spec)):
            market.add_(k, g, alpha=opt.lr[k])  # rounds as V2._update does
        return True

    # -- V1 --------------------------------------------------------------------

    def _keep_best(self, opt: V1, vendors: Vendors, losses, paths, finite: int) -> bool:
        market, n = opt.market, opt.market.depth
        if finite:
            i = int(torch.argmin(losses))
            best = torch.stack([vendors.seeds[k][int(paths[i, k])] for k in range(n)])
            best_loss = losses[i].double().cpu().reshape(1)
        else:
            best, best_loss = torch.zeros(n, dtype=torch.int64), torch.zeros(1, dtype=torch.float64)
        # One message per rank: [finite flag, best loss as float64 bits, seeds of the best path (N)].
        message = torch.cat([torch.tensor([finite]), best_loss.view(torch.int64), best])
        gathered = self.comm.all_gather(message, "step")
        if not self._all_finite(opt, gathered[:, 0]):
            return False
        winner = int(torch.argmin(gathered[:, 1].contiguous().view(torch.float64)))  # ties: the lowest rank
        seeds = tuple(gathered[winner, 2 + k].reshape(1) for k in range(n))
        chosen = market_vendors(market, SeededVendors(seeds, tuple(opt.probe_widths()), cache=False))
        for k in range(n):
            if int(seeds[k]):  # the leader's delta is zero
                market.add_(k, vendor_delta(chosen, k, 0, market.layouts[k].numel, market.device))
        return True

    # -- both ------------------------------------------------------------------

    def _all_finite(self, opt: MarketOptimizer, flags: torch.Tensor) -> bool:
        """True when every rank's losses were finite; else raise or skip on every rank alike."""
        bad = [r for r, f in enumerate(flags.tolist()) if not f]
        if not bad:
            return True
        message = (f"rank(s) {bad} saw NaN or infinite path losses at step {opt.steps}; the weights were not "
                   "updated: lower the learning rate or the probe scale")
        if opt.on_nonfinite == "raise":
            raise NonFiniteLossError(message)
        warnings.warn(f"step {opt.steps} skipped: {message}", RuntimeWarning, stacklevel=3)
        opt.skipped += 1
        return False
