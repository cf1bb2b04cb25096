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

from ..cost import spec_flops, step_flops


def cheap_vendors(costs: Sequence[float], vendors: Sequence[int], slack: float,
                  fixed: Sequence[bool] | None = None, max_vendors: int = 256) -> tuple[int, ...]:
    """Double the vendors of the spec whose doubling costs least, while the step stays within (1 + slack) x.

    costs: S_k, FLOPs of spec k on one example; vendors: the market asked
    for. slack 0 returns it unchanged; 0.05 lets the step cost 5% more.
    fixed: specs whose count must stay (no parameters to perturb); no spec
    grows past `max_vendors`, so specs the cost model sees as free stop too.
    Greedy and deterministic: the same inputs give the same market.
    """
    vendors = list(vendors)
    fixed = list(fixed) if fixed is not None else [False] * len(vendors)
    budget = (1.0 + slack) * step_flops(costs, vendors)
    while True:
        options = []
        for k in range(len(vendors)):
            if fixed[k] or 2 * vendors[k] > max_vendors:
                continue
            trial = vendors[:k] + [2 * vendors[k]] + vendors[k + 1:]
            options.append((step_flops(costs, trial), k, trial))
        if not options:
            return tuple(vendors)
        cost, _, trial = min(options)
        if cost > budget:
            return tuple(vendors)
        vendors = trial


def market_vendors(config, specs: Sequence, input_shape: Sequence[int]) -> tuple[int, ...]:
    """The vendor counts a TrainConfig's market gets: `vendors`, raised by `cheap_vendors` where a spec is cheap.

    specs: the model's spec modules, costed on one example of `input_shape`
    (convolutions and linear layers, `marketplace.cost.spec_flops`).
    """
    if not config.cheap_vendors or config.sampling:
        return tuple(config.vendors)
    import torch

    costs, shape = [], tuple(input_shape)
    with torch.random.fork_rng(devices=[]):  # a random layer in a spec must not move the caller's RNG
        for spec in specs:
            s, shape = spec_flops(spec, shape)
            costs.append(float(s))
    fixed = [not any(True for _ in spec.parameters()) for spec in specs]
    return cheap_vendors(costs, config.vendors, config.cheap_vendors, fixed)
