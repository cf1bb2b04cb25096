"""The cost model of a market: products, FLOPs and unit cost per product (docs/algorithm.md).

S_k is the cost of spec k on one example (multiply-adds x 2 of its
convolutions and linear layers, counted from the layer shapes; activations,
norms and pooling are not counted, as in torch's FlopCounterMode). With
P_k products after spec k (P_k = M_k x P_{k-1}, or M_k x S_k with partial
sampling), one market step on a batch of B examples costs

    C = B x sum_k P_k x S_k          (P_k vendor applications at spec k)

for P_N final products: a unit cost C / P_N per product, against
sum_k S_k for the "all at once" market (depth 1), whose unit cost does not
depend on its vendor count. `products` is the one count of P_k that the
market, the cheap-vendors rule and the tables share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


def layer_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """FLOPs (2 x multiply-adds) of one Conv/Linear call on one example; 0 for other layers."""
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * int(torch.Size(module.kernel_size).numel())
        return 2 * per_output * out[0].numel()
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * module.out_features * (out[0].numel() // module.out_features)
    return 0


def spec_flops(spec: nn.Module, input_shape: Sequence[int]) -> tuple[int, torch.Size]:
    """S_k: FLOPs of `spec` on one example of shape `input_shape`, and its output shape (per example)."""
    total = 0

    def count(module, args, out):
        nonlocal total
        total += layer_flops(module, args[0], out)

    leaves = [m for m in spec.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            device = next(spec.parameters(), torch.empty(0)).device
            out = spec(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    return total, out.shape[1:]


def products(vendors: Sequence[int], sampling: Sequence[int] | int = 0) -> tuple[int, ...]:
    """P_k after each spec: M_k x P_{k-1} with full sampling (S_k = 0), M_k x S_k otherwise."""
    sampling = [sampling] * len(vendors) if isinstance(sampling, int) else list(sampling)
    counts, upstream = [], 1
    for m, s in zip(vendors, sampling):
        upstream = m * (s or upstream)
        counts.append(upstream)
    return tuple(counts)


def step_flops(costs: Sequence[float], vendors: Sequence[int], sampling: Sequence[int] | int = 0) -> float:
    """C / B = sum_k P_k x S_k: FLOPs of one step per example, from S_k (`costs`) and the vendor counts."""
    return sum(p * s for p, s in zip(products(vendors, sampling), costs))


@dataclass(frozen=True)
class MarketCost:
    """The cost of one market step; flops are for `batch` examples."""

    vendors: tuple[int, ...]
    sampling: tuple[int, ...]
    batch: int
    spec_flops: tuple[int, ...]  # S_k per example
    products: tuple[int, ...]  # P_k after each spec

    @property
    def flops_per_spec(self) -> tuple[int, ...]:
        """B x P_k x S_k."""
        return tuple(self.batch * p * s for p, s in zip(self.products, self.spec_flops))

    @property
    def flops(self) -> int:
        """C: the whole step."""
        return sum(self.flops_per_spec)

    @property
    def final_products(self) -> int:
        return self.products[-1]

    @property
    def unit_cost(self) -> float:
        """C / P_N: FLOPs per final product."""
        return self.flops / self.final_products

    @property
    def all_at_once_unit_cost(self) -> int:
        """B x sum_k S_k: the unit cost when the whole model is one spec, whatever its vendor count."""
        return self.batch * sum(self.spec_flops)

    @property
    def speedup(self) -> float:
        """Unit cost of all at once / unit cost of this market (about N for large equal M and S_k)."""
        return self.all_at_once_unit_cost / self.unit_cost

    def as_dict(self) -> dict:
        return {"market": "x".join(map(str, self.vendors)), "vendors": list(self.vendors),
                "sampling": list(self.sampling), "batch": self.batch, "spec_flops": list(self.spec_flops),
                "products": list(self.products), "flops_per_spec": list(self.flops_per_spec),
                "flops": self.flops, "final_products": self.final_products, "unit_cost": self.unit_cost,
                "all_at_once_unit_cost": self.all_at_once_unit_cost, "speedup": self.speedup}


def market_cost(specs: Sequence[nn.Module], vendors: Sequence[int], sampling: Sequence[int] | int = 0,
                input_shape: Sequence[int] = (1, 28, 28), batch: int = 1) -> MarketCost:
    """The cost of one step of the market `specs` x `vendors` on `batch` examples of `input_shape`."""
    if len(specs) != len(vendors):
        raise ValueError(f"{len(vendors)} vendor counts for {len(specs)} specs")
    flops, shape = [], torch.Size(input_shape)
    for spec in specs:
        s, shape = spec_flops(spec, shape)
        flops.append(s)
    sampling = tuple([sampling] * len(vendors) if isinstance(sampling, int) else sampling)
    return MarketCost(tuple(vendors), sampling, batch, tuple(flops), products(vendors, sampling))


def beautiful_mnist_cost(vendors: Sequence[int], sampling: Sequence[int] | int = 0, batch: int = 1) -> MarketCost:
    """`market_cost` for the beautiful-MNIST CNN split into len(vendors) specs."""
    from .models import beautiful_mnist

    return market_cost(beautiful_mnist(depth=len(vendors)), vendors, sampling, batch=batch)


def format_table(costs: Sequence[MarketCost]) -> str:
    """A markdown table, one row per market."""
    head = ("| market | sampling | batch | products | S_k MFLOP/example | step GFLOP | unit cost MFLOP/product "
            "| all-at-once unit cost MFLOP | speed-up |\n|---|---|---|---:|---|---:|---:|---:|---:|")
    rows = []
    for c in costs:
        sampling = ",".join(map(str, c.sampling)) if any(c.sampling) else "full"
        rows.append(f"| {'x'.join(map(str, c.vendors))} | {sampling} | {c.batch} | {c.final_products:,} | "
                    f"{', '.join(f'{s / 1e6:.2f}' for s in c.spec_flops)} | {c.flops / 1e9:.3f} | "
                    f"{c.unit_cost / 1e6:.3f} | {c.all_at_once_unit_cost / 1e6:.3f} | {c.speedup:.2f}x |")
    return "\n".join([head, *rows])
