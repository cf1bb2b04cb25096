"""Random-path inference: each request goes through one vendor per spec (docs/algorithm.md section 7).

A deployed market serves every example along its own random path, so the
requests themselves probe the vendors. The forward pass stays one batched
computation per spec: the examples are grouped by the vendor they drew,
padded to the largest group, run through all vendors at once over the
stacked vendor weights, and scattered back into request order. Vendors
that no example drew are left out (a batch of one runs one vendor, not M).
Common layers (Conv2d, InstanceNorm2d, Linear, pooling, activations) run in
the grouped layout of `layouts` (the one `Market.evaluate` uses), the
vendors folded into the channels (one grouped convolution); any other spec
goes through `vmap(functional_call)`. There is no Python loop over examples
or vendors. In a low-rank market (`Market(rank=)`) the vendors are never
stacked: every group runs through the base weights plus its vendor's
low-rank correction (`lowrank_layers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.func import functional_call, vmap

from .. import layouts
from ..lowrank_layers import LowRankParts, spec_forward as lowrank_spec_forward
from ..market import Market, MarketError
from ..vendors import Vendors

Weights = dict[str, torch.Tensor] | LowRankParts  # one spec's vendors, as `serve` runs them


def _lowrank(market: Market, k: int, vendors: Vendors) -> bool:
    """Whether spec k's vendors run as low-rank parts (a low-rank market's vendors), not stacked weights."""
    return bool(market.rank and market.layouts[k].numel and hasattr(vendors, "lowrank_parts"))


def vendor_weights(market: Market, k: int, vendors: Vendors) -> Weights:
    """Spec k's vendors as `serve` runs them: stacked weights, or low-rank parts in a low-rank market."""
    if _lowrank(market, k, vendors):
        return vendors.lowrank_parts(k, market.lowrank_plans[k], market.device)
    return market.vendor_parameters(k, vendors)


def mirrored_weights(market: Market, k: int, vendors: Vendors) -> Weights:
    """`vendor_weights` with every delta negated: vendor j's mirror, base - delta_j."""
    if _lowrank(market, k, vendors):
        parts = vendors.lowrank_parts(k, market.lowrank_plans[k], market.device)
        return LowRankParts({n: -d for n, d in parts.dense.items()},
                            {n: (-a, b) for n, (a, b) in parts.factors.items()},
                            {n: (g, -s) for n, (g, s) in parts.scaled.items()})
    layout = market.layouts[k]
    if not layout.numel:
        return {}
    base = market.flat_parameters(k)
    return layout.split(base - vendors.deltas(k, layout.numel, base.device))


def select_vendors(weights: Weights, index: torch.Tensor) -> Weights:
    """Only the vendors `index` (the ones a batch drew), in that order."""
    if isinstance(weights, LowRankParts):
        return LowRankParts({n: d[index] for n, d in weights.dense.items()},
                            {n: (a[index], b[index]) for n, (a, b) in weights.factors.items()},
                            {n: (g, s[index]) for n, (g, s) in weights.scaled.items()})
    return {name: p[index] for name, p in weights.items()}


@dataclass
class Served:
    """The answer to a batch of requests.

    logits: [B, ...] the output of each example along its own path;
    paths: int64 [B, N], the vendor each example used at each spec.
    """

    logits: torch.Tensor
    paths: torch.Tensor


def random_paths(counts, batch: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """One uniform vendor per spec for each of `batch` examples: int64 [batch, N].

    Drawn on the CPU from `generator` (fresh entropy when None), so a seeded
    generator gives the same paths on every device.
    """
    cols = [torch.randint(0, m, (batch,), generator=generator) for m in counts]
    return torch.stack(cols, dim=1).to(device) if cols else torch.zeros(batch, 0, dtype=torch.int64, device=device)


def _slots(vendor: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Slots that pad the examples into equal per-vendor groups.

    vendor: int64 [B], the vendor of each example. Slot r * M + j holds the
    r-th example of vendor j, so the padded batch reshapes to [G, M, ...]
    with G the largest group. Returns (gather [G * M]: the example in each
    slot, slot [B]: the slot of each example, G). Empty slots repeat
    example 0; their outputs are dropped. In numpy: a server runs this for
    every small batch, where torch's per-operation cost would exceed the work.
    """
    b = vendor.shape[0]
    counts = np.bincount(vendor, minlength=m)  # [M]
    group = int(counts.max())
    order = np.argsort(vendor, kind="stable")  # examples sorted by vendor
    starts = np.cumsum(counts) - counts  # first sorted position of each vendor
    sorted_vendor = vendor[order]
    rank = np.arange(b) - starts[sorted_vendor]  # position inside its group
    slot = np.empty_like(vendor)
    slot[order] = rank * m + sorted_vendor
    gather = np.zeros(group * m, dtype=np.int64)
    gather[slot] = np.arange(b)
    return gather, slot, group


def _spec_forward(market: Market, k: int, params: Weights, h: torch.Tensor,
                  grouped: bool = True) -> torch.Tensor:
    """Spec k on h [G, M, ...] (example r of vendor j at [r, j]) -> [G, M, ...out].

    The grouped layout (`layouts.grouped_spec`) avoids the reshuffles
    that vmap's batching rules add around InstanceNorm and pooling (about
    1.4x slower on a CPU for the CNN's first spec).
    """
    spec = market.specs[k]
    try:
        if isinstance(params, LowRankParts):  # base weights + each vendor's correction: [M, G, ...] in and out
            base = dict(spec.named_parameters())
            return lowrank_spec_forward(spec, base, params, h.transpose(0, 1), shared=False).transpose(0, 1)
        if grouped and layouts.expressible(spec):
            try:  # grouped_spec takes and gives the vendor axis first: [M, G, ...]
                return layouts.grouped_spec(spec, params, h.transpose(0, 1), shared=False).transpose(0, 1)
            except layouts.UnsupportedLayout:
                pass
        call = lambda p, inp: functional_call(spec, p, (inp,))
        return vmap(call, in_dims=(0, 1), out_dims=1)(params, h)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MarketError(f"spec {k} ({type(spec).__name__}) cannot take its input "
                          f"of shape {[h.shape[0] * h.shape[1], *h.shape[2:]]}: {first}") from e


def balanced_paths(counts, batch: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Paths whose vendors are spread evenly: int64 [batch, N].

    At each spec the vendors 0..M-1 are repeated to fill the batch and
    shuffled, so each example's vendor is still uniform while the groups
    differ by at most one (no padding in `serve`).
    """
    cols = [torch.arange(batch).remainder(m)[torch.randperm(batch, generator=generator)] for m in counts]
    return torch.stack(cols, dim=1).to(device) if cols else torch.zeros(batch, 0, dtype=torch.int64, device=device)


@torch.no_grad()
def serve(market: Market, vendors: Vendors, x: torch.Tensor, paths: torch.Tensor | None = None,
          generator: torch.Generator | None = None, balanced: bool = False, grouped: bool = True,
          stacked: Sequence[Weights] | None = None) -> Served:
    """Run each example of x through its own path of the market.

    x: [B, ...]; vendors: the current vendors (e.g. an optimizer's
    `.vendors`); paths: int64 [B, N] to serve along given paths, else a path
    is drawn for every example from `generator`: uniform and independent
    vendors, or with `balanced` a shuffled even spread (`balanced_paths`).
    grouped=False runs every spec through vmap (the general path).
    stacked: `vendor_weights(market, k, vendors)` for every spec, made
    once by a caller that serves many batches with the same weights and
    vendors (a server, between two updates); None computes them here.
    Returns logits [B, ...] and paths [B, N].
    """
    if tuple(vendors.counts) != market.vendor_counts:
        raise MarketError(f"vendors {list(vendors.counts)} do not match the market {list(market.vendor_counts)}")
    b = x.shape[0]
    if paths is None:
        draw = balanced_paths if balanced else random_paths
        paths = draw(market.vendor_counts, b, generator, x.device)
    paths = paths.to(device=x.device, dtype=torch.int64)
    if paths.shape != (b, market.depth):
        raise MarketError(f"expected paths [{b}, {market.depth}] for a batch of {b}, got {list(paths.shape)}")
    bad = (paths < 0) | (paths >= torch.tensor(market.vendor_counts, device=x.device))
    if bool(bad.any()):
        raise MarketError(f"paths name vendors outside the market {list(market.vendor_counts)}")
    if b == 0:
        return Served(market(x), paths)
    h, index = x, lambda a: torch.from_numpy(a).to(x.device)
    for k, vendor in enumerate(paths.cpu().numpy().T):
        params = stacked[k] if stacked is not None else vendor_weights(market, k, vendors)
        used = np.unique(vendor)  # sorted
        if len(used) < market.vendor_counts[k]:  # a small batch: run only the vendors its examples drew
            params = select_vendors(params, index(used))
            vendor = np.searchsorted(used, vendor)
        m = len(used)
        gather, slot, group = _slots(vendor, m)
        padded = h[index(gather)].view(group, m, *h.shape[1:])  # [G, M, ...]
        out = _spec_forward(market, k, params, padded, grouped)
        h = out.reshape(group * m, *out.shape[2:])[index(slot)]  # back to request order [B, ...]
    return Served(h, paths)


@torch.no_grad()
def serve_reference(market: Market, vendors: Vendors, x: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
    """The slow, obvious version: every example alone through its path's weights.

    For tests and for clients that serve one request at a time.
    """
    rows = []
    for xi, path in zip(x, paths.tolist()):
        h = xi.unsqueeze(0)
        for k, (spec, j) in enumerate(zip(market.specs, path)):
            layout = market.layouts[k]
            flat = market.flat_parameters(k) + vendors.deltas(k, layout.numel, x.device)[j]
            h = functional_call(spec, layout.split(flat), (h,))
        rows.append(h[0])
    return torch.stack(rows)
