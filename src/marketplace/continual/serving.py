"""Random-path inference: each request goes through one vendor per spec (ALGORITHM.md section 7).

A deployed market serves every example along its own random path, so the
requests themselves probe the vendors. The forward pass stays one batched
computation per spec: the examples are grouped by the vendor they drew,
padded to the largest group, run through all vendors at once over the
stacked vendor weights, and scattered back into request order. Vendors
that no example drew are left out (a batch of one runs one vendor, not M). Common layers
(Conv2d, InstanceNorm2d, Linear, pooling, activations) run in a grouped
layout, the vendors folded into the channels (one grouped convolution);
any other spec goes through `vmap(functional_call)` as `Market.evaluate`
does. There is no Python loop over examples or vendors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ..market import Market, MarketError
from ..vendors import Vendors


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


def _slots(vendor: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Slots that pad the examples into equal per-vendor groups.

    vendor: int64 [B], the vendor of each example. Slot r * M + j holds the
    r-th example of vendor j, so the padded batch reshapes to [G, M, ...]
    with G the largest group. Returns (gather [G * M]: the example in each
    slot, slot [B]: the slot of each example, G). Empty slots repeat
    example 0; their outputs are dropped.
    """
    b = vendor.shape[0]
    counts = torch.bincount(vendor, minlength=m)  # [M]
    group = int(counts.max())
    order = torch.argsort(vendor, stable=True)  # examples sorted by vendor
    starts = torch.cumsum(counts, 0) - counts  # first sorted position of each vendor
    sorted_vendor = vendor[order]
    rank = torch.arange(b, device=vendor.device) - starts[sorted_vendor]  # position inside its group
    slot = torch.empty_like(vendor)
    slot[order] = rank * m + sorted_vendor
    gather = torch.zeros(group * m, dtype=torch.int64, device=vendor.device)
    gather[slot] = torch.arange(b, device=vendor.device)
    return gather, slot, group


class _Unsupported(Exception):
    """The grouped layout has no rule for this module or shape; use vmap."""


_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU,
                nn.Softplus, nn.Identity)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _grouped_forward(module: nn.Module, params: dict[str, torch.Tensor], h: torch.Tensor,
                     prefix: str = "") -> torch.Tensor:
    """Every vendor on its own group of examples, vendors folded into channels.

    h: [G, M, *features], example r of vendor j at [r, j]; params: stacked
    vendor weights {name: [M, *shape]}. A convolution becomes one grouped
    convolution (M groups), an instance norm one norm over M * C channels, a
    linear layer one batched matmul; per-channel layers see [G, M * C, H, W].
    This avoids the reshuffles that vmap's batching rules add around
    InstanceNorm and pooling (about 1.4x slower on a CPU for the CNN's first
    spec). Raises _Unsupported for anything else.
    """
    g, m = h.shape[:2]
    merged = lambda t: t.reshape(g, m * t.shape[2], *t.shape[3:])  # [G, M*C, H, W]
    split = lambda t: t.view(g, m, -1, *t.shape[2:])  # back to [G, M, C, H, W]
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            h = _grouped_forward(child, params, h, f"{prefix}{name}.")
        return h
    own = {n: params[prefix + n] for n, _ in module.named_parameters(recurse=False)}
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros" and h.dim() == 5 \
            and not isinstance(module.padding, str):
        w, b = own["weight"], own.get("bias")  # [M, O, C/groups, kh, kw], [M, O]
        y = F.conv2d(merged(h), w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                     module.stride, module.padding, module.dilation, module.groups * m)
        return split(y)
    if isinstance(module, nn.InstanceNorm2d) and not module.track_running_stats and h.dim() == 5:
        w, b = own.get("weight"), own.get("bias")  # [M, C]
        y = F.instance_norm(merged(h), weight=None if w is None else w.reshape(-1),
                            bias=None if b is None else b.reshape(-1), eps=module.eps)
        return y.view(h.shape)
    if isinstance(module, _POOLS) and h.dim() == 5:
        return split(module(merged(h)))
    if isinstance(module, nn.Linear):
        w, b = own["weight"], own.get("bias")  # [M, O, F], [M, O]
        y = torch.einsum("gm...f,mof->gm...o", h, w)
        if b is not None:
            y = y + b.view(1, m, *([1] * (y.dim() - 3)), -1)
        return y
    if isinstance(module, nn.Flatten) and module.end_dim == -1 and module.start_dim >= 1:
        return h.flatten(module.start_dim + 1)
    if isinstance(module, _ELEMENTWISE):
        return module(h)
    raise _Unsupported(type(module).__name__)


def _spec_forward(market: Market, k: int, params: dict[str, torch.Tensor], h: torch.Tensor,
                  grouped: bool = True) -> torch.Tensor:
    """Spec k on h [G, M, ...] (example r of vendor j at [r, j]) -> [G, M, ...out]."""
    spec = market.specs[k]
    call = lambda p, inp: functional_call(spec, p, (inp,))
    try:
        if grouped:
            try:
                return _grouped_forward(spec, params, h)
            except _Unsupported:
                pass
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
          stacked: Sequence[dict[str, torch.Tensor]] | None = None) -> Served:
    """Run each example of x through its own path of the market.

    x: [B, ...]; vendors: the current vendors (e.g. an optimizer's
    `.vendors`); paths: int64 [B, N] to serve along given paths, else a path
    is drawn for every example from `generator`: uniform and independent
    vendors, or with `balanced` a shuffled even spread (`balanced_paths`).
    grouped=False runs every spec through vmap (the general path).
    stacked: `market.vendor_parameters(k, vendors)` for every spec, made
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
    h = x
    for k in range(market.depth):
        params = stacked[k] if stacked is not None else market.vendor_parameters(k, vendors)
        vendor = paths[:, k]
        used = torch.unique(vendor)  # sorted
        if used.numel() < market.vendor_counts[k]:  # a small batch: run only the vendors its examples drew
            params = {name: p[used] for name, p in params.items()}
            vendor = torch.searchsorted(used, vendor.contiguous())
        m = used.numel()
        gather, slot, group = _slots(vendor, m)
        padded = h[gather].view(group, m, *h.shape[1:])  # [G, M, ...]
        out = _spec_forward(market, k, params, padded, grouped)
        h = out.reshape(group * m, *out.shape[2:])[slot]  # back to request order [B, ...]
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
