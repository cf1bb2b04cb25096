"""More vendors where a spec is cheap: vendor counts chosen by the cost of each spec.

A vendor of spec k costs P_{k-1} x S_k FLOPs per example (every upstream
product goes through it), so the head of the beautiful-MNIST CNN (a
576 -> 10 linear layer, 0.01 MFLOP) can take many vendors for the price of
one convolution vendor (21 MFLOP). Each vendor adds a random direction to
its spec's estimate and multiplies the paths that attribute every spec, so
the cheap extra vendors sharpen the whole step.

FLOPs are not the whole price: a vendor of spec k also holds P_k copies of
the spec's activations, and a spec the cost model sees as cheap (pooling,
norms, a small linear head on a wide input) can hold large ones. So the
raised market must also keep its largest activation within MEMORY_FACTOR x
the asked market's, or a default would turn a runnable command into an
out-of-memory (the ResNet head at 256 vendors holds 26 GB at batch 128).
"""

from __future__ import annotations

from typing import Sequence

from ..cost import largest_activation, products, spec_flops, step_flops
from ..defaults import CHEAP_SPEC_RATE

# The raised market may hold this many times the asked market's largest activation. 8 is what
# the beautiful-MNIST CNN's 4,4,4 -> 4x4x64 needs (its head reads 576 features per path).
MEMORY_FACTOR = 8.0


def peak_activation(activations: Sequence[int], vendors: Sequence[int]) -> int:
    """max_k P_k A_k: the largest activation one step holds per example (A_k: spec k's largest, per path)."""
    return max((p * a for p, a in zip(products(vendors), activations)), default=0)


def cheap_vendors(costs: Sequence[float], vendors: Sequence[int], slack: float,
                  fixed: Sequence[bool] | None = None, max_vendors: int = 256,
                  activations: Sequence[int] | None = None,
                  memory_factor: float = MEMORY_FACTOR) -> tuple[int, ...]:
    """Double the vendors of the spec whose doubling costs least, while the step stays within (1 + slack) x.

    costs: S_k, FLOPs of spec k on one example; vendors: the market asked
    for. slack 0 returns it unchanged; 0.05 lets the step cost 5% more.
    fixed: specs whose count must stay (no parameters to perturb); no spec
    grows past `max_vendors`, so specs the cost model sees as free stop too.
    activations: A_k, the largest activation of spec k on one example; when
    given, no doubling lifts `peak_activation` past `memory_factor` x the
    asked market's. Greedy and deterministic: the same inputs give the same market.
    """
    vendors = list(vendors)
    fixed = list(fixed) if fixed is not None else [False] * len(vendors)
    budget = (1.0 + slack) * step_flops(costs, vendors)
    memory = memory_factor * peak_activation(activations, vendors) if activations is not None else None
    while True:
        options = []
        for k in range(len(vendors)):
            if fixed[k] or 2 * vendors[k] > max_vendors:
                continue
            trial = vendors[:k] + [2 * vendors[k]] + vendors[k + 1:]
            if memory is not None and peak_activation(activations, trial) > memory:
                continue  # cheap in FLOPs, not in memory
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
    return cheap_vendors(costs, config.vendors, config.cheap_vendors, fixed,
                         activations=_activations(specs, input_shape))


def _activations(specs: Sequence, input_shape: Sequence[int]) -> list[int]:
    """A_k of every spec, each on the output shape of the one before it."""
    import torch

    found, shape = [], tuple(input_shape)
    with torch.random.fork_rng(devices=[]):
        for spec in specs:
            peak, shape = largest_activation(spec, shape)
            found.append(peak)
    return found


def raised_rates(rate: float, asked: Sequence[int], trained: Sequence[int],
                 factor: float = CHEAP_SPEC_RATE) -> float | list[float]:
    """The default rate of each spec: `factor` x rate where cheap_vendors raised the count, else rate.

    With many vendors a spec's V2 direction is estimated well, and a unit
    step of the full rate along it overshoots: the head of 4x4x64 learns
    more at half the rate (docs/results.md, "A rate per spec"). An unraised
    market keeps the one rate.
    """
    if tuple(asked) == tuple(trained):
        return rate
    return [rate * factor if m > a else rate for a, m in zip(asked, trained)]


def describe_market(asked: Sequence[int], trained: Sequence[int], slack: float,
                    rates: float | Sequence[float] | None = None) -> str:
    """`4x4x64 (asked 4,4,4; cheap_vendors=0.1 gave the head 64 vendors)`: the market, and why not the one asked.

    rates: the rate of each spec when they differ (`raised_rates`), said too.
    """
    name = "x".join(map(str, trained))
    if tuple(asked) == tuple(trained):
        return name
    last = len(trained) - 1
    raised = [f"{'the head' if k == last else f'spec {k}'} {m}" for k, (a, m) in enumerate(zip(asked, trained))
              if a != m]
    lr = (f" at a lower rate (lr {','.join(f'{r:g}' for r in rates)}; --lr sets yours)"
          if isinstance(rates, (list, tuple)) else "")
    return (f"{name} (asked {','.join(map(str, asked))}; cheap_vendors={slack:g} gave {' and '.join(raised)} "
            f"vendors{lr}; cheap_vendors=0 keeps your counts)")
