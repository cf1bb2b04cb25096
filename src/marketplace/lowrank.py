"""Low-rank vendors: each vendor of a Linear, Conv2d or Embedding weight is sigma * c * A B^T, from its seed.

Why: a dense vendor of a weight [out, in] costs out * in random numbers,
and out * in stored values per vendor in the batched forward. A rank-r
vendor costs r * (out + in) of each, and its effect on an input is two thin
products, `x (W + s A B^T)^T = x W^T + s (x B) A^T`, so the base weight
runs once for every vendor (lowrank_layers.py). The direction V2 reconciles
from M such vendors is still a sum of low-rank terms: one product of the
stacked factors, `A diag(a) B^T`, never one matrix per vendor.

Which matrix. A weight [out, *rest] is read as [out, in] with in = prod(rest):
Linear [out, in]; Embedding [num, dim] (a row per token); Conv2d with
groups=1 [out, C * kh * kw]: each output channel's kernel is one row, so
rank r means r basis kernels B_i [C, kh, kw] mixed per output channel by
A[o, i]. The correction is then a convolution with r output channels and a
1x1 mix, and the taps of one kernel move together, as in trained kernels.
(Rank over (out * kh * kw, C) would not factor into convolutions.) The
rank is clamped to min(out, in): more would add no direction.

Scale. A and B are uniform(-1, 1) (variance 1/3); an entry of A B^T sums r
products of variance 1/9, so c = sqrt(3 / r) gives each entry of c A B^T
the variance 1/3 of a dense vendor's entry, and sigma keeps its meaning.

Everything else (biases, norms, grouped convolutions, any other parameter)
stays dense-perturbed, drawn from the same per-vendor stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .errors import MarketError
from .lowrank_layers import LowRankParts, factor_deltas
from .rng import uniform_pm1
from .vendors import SeededVendors, draw_vendors

_FACTORABLE = (nn.Linear, nn.Conv2d, nn.Embedding)


def check_rank(rank) -> int:
    """0 (dense vendors) or a positive int."""
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
        raise MarketError(f"rank must be an int >= 0 (0 = dense vendors), got {rank!r}")
    return rank


def entry_scale(rank: int) -> float:
    """c = sqrt(3 / r): an entry of c A B^T then has a dense vendor's variance (see the module docstring)."""
    return math.sqrt(3.0 / rank)


def _factorable(module: nn.Module) -> bool:
    """A layer whose forward reads its weight only through the op lowrank_layers corrects."""
    if type(module) is nn.Conv2d:
        return module.groups == 1
    if type(module) is nn.Embedding:
        return module.max_norm is None  # max_norm rewrites the weight in forward
    return type(module) is nn.Linear


def factorable_weights(spec: nn.Module) -> dict[str, list[nn.Module]]:
    """{layout name of a weight: the layers that read it} for every weight a low-rank vendor may factor.

    Exact types only (a subclass may read its weight elsewhere), and nothing
    inside a MultiheadAttention, which reads its projections' weights itself.
    """
    names = {id(p): n for n, p in spec.named_parameters()}
    attention = [n for n, m in spec.named_modules() if isinstance(m, nn.MultiheadAttention)]
    out: dict[str, list[nn.Module]] = {}
    for name, module in spec.named_modules():
        if any(name.startswith(a + ".") for a in attention) or not _factorable(module):
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() >= 2 and id(weight) in names:
            out.setdefault(names[id(weight)], []).append(module)
    return out


@dataclass(frozen=True)
class SpecPlan:
    """How a vendor of one spec is drawn: each parameter's slice of the vendor's uniform draws.

    A factored weight draws A [rows, r] then B [cols, r]; a dense parameter
    draws its numel values. ranks: {name: r} of the factored weights.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    ranks: dict[str, int] = field(hash=False)
    offsets: tuple[int, ...] = ()
    draws: int = 0

    def rows_cols(self, name: str) -> tuple[int, int]:
        shape = self.shapes[self.names.index(name)]
        return shape[0], math.prod(shape[1:])

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)


def spec_plan(spec: nn.Module, names: Sequence[str], shapes: Sequence[torch.Size], rank: int) -> SpecPlan:
    """The plan of a spec whose parameters are `names` (layout order), factoring at `rank` (clamped)."""
    factorable = factorable_weights(spec)
    ranks, offsets, total = {}, [], 0
    for name, shape in zip(names, shapes):
        offsets.append(total)
        if name in factorable:
            rows, cols = shape[0], math.prod(shape[1:])
            ranks[name] = min(rank, rows, cols)
            total += ranks[name] * (rows + cols)
        else:
            total += math.prod(shape)
    return SpecPlan(tuple(names), tuple(shapes), ranks, tuple(offsets), total)


def mirror_signs(plan: SpecPlan) -> torch.Tensor:
    """-1 over the draws an antithetic mirror negates (A and the dense parts: -A B^T = -(A B^T)), +1 over B."""
    signs = -torch.ones(plan.draws)
    for name, offset in zip(plan.names, plan.offsets):
        if name in plan.ranks:
            rows, cols = plan.rows_cols(name)
            start = offset + rows * plan.ranks[name]
            signs[start : start + cols * plan.ranks[name]] = 1.0
    return signs


def unit_draws(seeds: torch.Tensor, plan: SpecPlan, antithetic: bool = False) -> torch.Tensor:
    """uniform(-1, 1) [M, draws] of every vendor of a spec; vendor 2i mirrors 2i-1 when antithetic."""
    units = uniform_pm1(seeds, plan.draws)
    if antithetic:
        pairs = (len(units) - 1) // 2
        units[2 : 2 * pairs + 1 : 2] = units[1 : 2 * pairs : 2] * mirror_signs(plan).to(units.device)
    return units


def split_draws(units: torch.Tensor, plan: SpecPlan, sigma: float) -> LowRankParts:
    """[M, draws] -> dense deltas {name: [M, *shape]} and factors {name: (a [M, rows, r], b [M, cols, r])}.

    a carries sigma * c, so vendor j's delta of a factored weight is a[j] @ b[j].T.
    """
    m, dense, factors = units.shape[0], {}, {}
    for name, shape, offset in zip(plan.names, plan.shapes, plan.offsets):
        if name in plan.ranks:
            r = plan.ranks[name]
            rows, cols = plan.rows_cols(name)
            a = units[:, offset : offset + rows * r].reshape(m, rows, r)
            b = units[:, offset + rows * r : offset + (rows + cols) * r].reshape(m, cols, r)
            factors[name] = (a * (sigma * entry_scale(r)), b)
        else:
            dense[name] = sigma * units[:, offset : offset + math.prod(shape)].reshape(m, *shape)
    return LowRankParts(dense, factors, {})


def materialise(parts: LowRankParts, plan: SpecPlan) -> torch.Tensor:
    """Flat deltas [M, numel] in layout order: W + delta is what each vendor stands for (tests, references)."""
    flat = []
    for name in plan.names:
        if name in parts.factors:
            a, b = parts.factors[name]
            flat.append(factor_deltas(a, b, a.shape[1:2] + b.shape[1:2]).flatten(1))
        else:
            flat.append(parts.dense[name].flatten(1))
    return torch.cat(flat, dim=1)


def reconcile_parts(attribution: torch.Tensor, parts: LowRankParts, plan: SpecPlan) -> torch.Tensor:
    """R = sum_j a_j delta_j, flat [numel], without one matrix per vendor.

    A factored weight's R is (a_j A_j stacked side by side) [rows, M r] @
    (B_j stacked) [M r, cols]: one product of the stacked factors.
    """
    flat = []
    for name in plan.names:
        if name in parts.factors:
            a, b = parts.factors[name]  # [M, rows, r], [M, cols, r]
            weighted = a * attribution.to(a.dtype)[:, None, None]
            left = weighted.transpose(0, 1).reshape(a.shape[1], -1)  # [rows, M r]
            right = b.transpose(0, 1).reshape(b.shape[1], -1)  # [cols, M r]
            flat.append((left @ right.T).reshape(-1))
        else:
            d = parts.dense[name]
            flat.append(attribution.to(d.dtype) @ d.flatten(1))
    return torch.cat(flat) if flat else attribution.new_zeros(0)


@dataclass(eq=False)
class LowRankVendors:
    """The vendors of one step, low-rank: the seeds of `SeededVendors`, drawn through each spec's plan.

    Anything that reads `deltas` (a reference, the alignment diagnostics)
    gets the materialised deltas; the market's forward reads `lowrank_parts`
    and the update reads `reconcile`, neither of which builds one matrix per vendor.
    """

    seeded: SeededVendors
    plans: tuple[SpecPlan, ...]
    _units: dict = field(default_factory=dict, repr=False)

    @property
    def counts(self) -> tuple[int, ...]:
        return self.seeded.counts

    @property
    def sampling_seed(self) -> int:
        return self.seeded.sampling_seed

    @property
    def seeds(self) -> tuple[torch.Tensor, ...]:
        return self.seeded.seeds

    @property
    def sigma(self) -> tuple[float, ...]:
        return self.seeded.sigma

    def units(self, k: int, device: torch.device) -> torch.Tensor:
        """uniform(-1, 1) [M_k, draws_k]: all a vendor of spec k is made of."""
        key = (k, str(device))
        if key in self._units:
            return self._units[key]
        units = unit_draws(self.seeded.seeds[k].to(device), self.plans[k], self.seeded.antithetic)
        if self.seeded.cache:
            self._units[key] = units
        return units

    def lowrank_parts(self, k: int, plan: SpecPlan, device: torch.device) -> LowRankParts:
        return split_draws(self.units(k, device), self.plans[k], self.seeded.sigma[k])

    def deltas(self, k: int, numel: int, device: torch.device) -> torch.Tensor:
        """Materialised flat deltas [M_k, numel]: for references only, the market never asks for them."""
        return materialise(self.lowrank_parts(k, self.plans[k], device), self.plans[k])

    def delta(self, k: int, j: int, numel: int, device: torch.device) -> torch.Tensor:
        """Vendor j's flat delta [numel] (V1 applies the best one): one vendor materialised."""
        units = self.units(k, device)[j : j + 1]
        return materialise(split_draws(units, self.plans[k], self.seeded.sigma[k]), self.plans[k])[0]

    def reconcile(self, k: int, attribution: torch.Tensor, numel: int, device: torch.device) -> torch.Tensor:
        return reconcile_parts(attribution.to(device), self.lowrank_parts(k, self.plans[k], device), self.plans[k])


def draw_lowrank_vendors(seed: int, step: int, counts: Sequence[int], sigma: Sequence[float],
                         plans: Sequence[SpecPlan], cache: bool = True, stream: int = 0,
                         antithetic: bool = False) -> LowRankVendors:
    """The low-rank vendors of `step`: the same seeds as `draw_vendors`, expanded as factors."""
    return LowRankVendors(draw_vendors(seed, step, counts, sigma, cache, stream, antithetic), tuple(plans))


def direction_parts(direction: torch.Tensor, steps: torch.Tensor, plan: SpecPlan) -> LowRankParts:
    """Vendors that move along one flat direction G by steps [M] (AdaptiveV2's rate market), as parts.

    A factored weight's vendor j is W + s_j G: the forward runs x G once and
    scales it per vendor, so no vendor's weight is built.
    """
    dense, scaled, offset = {}, {}, 0
    for name, shape in zip(plan.names, plan.shapes):
        g = direction[offset : offset + math.prod(shape)].reshape(shape)
        offset += math.prod(shape)
        if name in plan.ranks:
            scaled[name] = (g, steps)
        else:
            dense[name] = steps.reshape(-1, *([1] * len(shape))) * g[None]
    return LowRankParts(dense, {}, scaled)
