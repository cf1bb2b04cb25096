"""The vendors of one step: a seed per vendor expands into its weight delta.

A `SeededVendors` is all that crosses a wire: seeds and probe widths. Any
object with `counts`, `sampling_seed` and `deltas(k, numel, device)` can stand
in for it (the adaptive-rate variant proposes deltas along a known direction).
Vendors may also offer `delta(k, j, ...)` and `reconcile(k, a, ...)` when they
can do better than materialising every vendor (low-rank vendors, lowrank.py):
`vendor_delta` and `reconciled_delta` use them where they exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch

from .functional import reconcile
from .rng import derive_seeds, uniform_pm1

# Purposes keep the seed streams derived from one master seed apart.
VENDOR_STREAM, SAMPLING_STREAM, BATCH_STREAM = 1, 2, 3


class Vendors(Protocol):
    counts: tuple[int, ...]
    sampling_seed: int

    def deltas(self, k: int, numel: int, device: torch.device) -> torch.Tensor:
        """Flat weight deltas of every vendor of spec k, float32 [M_k, numel]."""
        ...


@dataclass(eq=False)
class SeededVendors:
    """Vendor j of spec k adds sigma[k] * uniform(-1, 1) drawn from `seeds[k][j]`.

    seeds: per spec, int64 [M_k] on the CPU; `seeds[k][0]` is 0, the leader.
    cache: keep expanded deltas until the step ends (faster), or regenerate
    them from the seeds on every use (memory of the seeds only).
    antithetic: vendors come in pairs, vendor 2i the mirror -delta of vendor
    2i-1 (its own seed unused), so the pair's difference cancels the
    even-order terms of the loss; with an even M_k the last vendor is unpaired.
    """

    seeds: tuple[torch.Tensor, ...]
    sigma: tuple[float, ...]
    sampling_seed: int = 0
    cache: bool = True
    antithetic: bool = False
    _units: dict = field(default_factory=dict, repr=False)

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.seeds)

    def unit_deltas(self, k: int, numel: int, device: torch.device) -> torch.Tensor:
        """uniform(-1, 1) [M_k, numel] of spec k: the deltas before scaling by sigma."""
        key = (k, numel, str(device))
        if key in self._units:
            return self._units[key]
        units = uniform_pm1(self.seeds[k].to(device), numel)
        if self.antithetic:
            pairs = (len(units) - 1) // 2
            units[2 : 2 * pairs + 1 : 2] = -units[1 : 2 * pairs : 2]
        if self.cache:
            self._units[key] = units
        return units

    def deltas(self, k: int, numel: int, device: torch.device) -> torch.Tensor:
        return self.sigma[k] * self.unit_deltas(k, numel, device)


def draw_vendors(
    seed: int,
    step: int,
    counts: Sequence[int],
    sigma: Sequence[float],
    cache: bool = True,
    stream: int = 0,
    antithetic: bool = False,
) -> SeededVendors:
    """The vendors of `step`: a pure function of (seed, step, stream).

    `stream` tells apart sets of vendors drawn in the same step (for
    example by different replicas); 0 is the default stream.
    """
    seeds = tuple(
        torch.cat([torch.zeros(1, dtype=torch.int64),
                   derive_seeds(seed, VENDOR_STREAM + (stream << 8), step, k, count=m - 1)])
        for k, m in enumerate(counts)
    )
    sampling_seed = int(derive_seeds(seed, SAMPLING_STREAM + (stream << 8), step)[0])
    return SeededVendors(seeds, tuple(float(s) for s in sigma), sampling_seed, cache, antithetic)


def vendor_delta(vendors: Vendors, k: int, j: int, numel: int, device: torch.device) -> torch.Tensor:
    """Vendor j's flat delta [numel] of spec k (its own `delta` if it has one, else row j of `deltas`)."""
    own = getattr(vendors, "delta", None)
    return own(k, j, numel, device) if own is not None else vendors.deltas(k, numel, device)[j]


def reconciled_delta(vendors: Vendors, k: int, attribution: torch.Tensor, numel: int,
                     device: torch.device) -> torch.Tensor:
    """R_k = sum_j a_kj delta_kj, flat [numel] (the vendors' own `reconcile` if they have one)."""
    own = getattr(vendors, "reconcile", None)
    if own is not None:
        return own(k, attribution, numel, device)
    return reconcile(attribution, vendors.deltas(k, numel, device))
