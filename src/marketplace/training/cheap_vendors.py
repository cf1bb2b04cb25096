"""More vendors where a spec is cheap: vendor counts chosen by the cost of each spec.

A vendor of spec k costs P_{k-1} x S_k FLOPs per example (every upstream
product goes through it), so the head of the beautiful-MNIST CNN (a
576 -> 10 linear layer, 0.01 MFLOP) can take many vendors for the price of
one convolution vendor (21 MFLOP). Each vendor adds a random direction to
its spec's estimate and multiplies the paths that attribute every spec, so
the cheap extra vendors sharpen the whole step.
"""

from __future__ import annotations

from typing import Sequence


def step_flops(costs: Sequence[float], vendors: Sequence[int]) -> float:
    """C = sum_k P_k S_k per example, full sampling (ALGORITHM.md section 3)."""
    total, products = 0.0, 1
    for s, m in zip(costs, vendors):
        products *= m
        total += products * s
    return total


def cheap_vendors(costs: Sequence[float], vendors: Sequence[int], slack: float) -> tuple[int, ...]:
    """Double the vendors of the spec whose doubling costs least, while the step stays within (1 + slack) x.

    costs: S_k, FLOPs of spec k on one example; vendors: the market asked
    for. slack 0 returns it unchanged; 0.05 lets the step cost 5% more.
    Greedy and deterministic: the same inputs give the same market.
    """
    vendors = list(vendors)
    budget = (1.0 + slack) * step_flops(costs, vendors)
    while True:
        options = []
        for k in range(len(vendors)):
            trial = vendors[:k] + [2 * vendors[k]] + vendors[k + 1:]
            options.append((step_flops(costs, trial), k, trial))
        cost, _, trial = min(options)
        if cost > budget:
            return tuple(vendors)
        vendors = trial


def market_vendors(config) -> tuple[int, ...]:
    """The vendor counts a TrainConfig's market gets: --vendors, raised by --cheap-vendors where it is cheap."""
    if not config.cheap_vendors or config.sampling:
        return tuple(config.vendors)
    from ..experiments.cost import spec_flops
    from ..models import beautiful_mnist

    costs, shape = [], (1, 28, 28)
    for spec in beautiful_mnist(depth=len(config.vendors)):
        s, shape = spec_flops(spec, shape)
        costs.append(float(s))
    return cheap_vendors(costs, config.vendors, config.cheap_vendors)
