"""How well the market's direction points down the true gradient.

Backprop is used only as a measuring stick: for one batch, the V2 direction
G (docs/algorithm.md, built from the pure functions of `functional`)
is compared with -grad L at the same base weights, where L is the same mean
cross-entropy the paths are scored with. Three cosines per spec k and for
the whole model:

- `cosine`: cos(G, -g), what the step actually does;
- `best_cosine`: cos(P g, g), P the orthogonal projection onto the span of
  the same step's vendor deltas: the best any weighting of those probes
  could do. cosine / best_cosine is how much of its probes the attribution
  uses; best_cosine itself is how much the probes allow;
- `random_cosine`: E cos(P g, g) for a uniformly random subspace of the
  same dimension n in d parameters, about sqrt(n / d) (exact formula below;
  for few directions a little less: 0.975 sqrt(n / d) at n = 10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..errors import MarketplaceError
from ..functional import path_losses, reconcile, standardized_attribution, unit_directions, vendor_attribution
from ..market import Market
from ..optim import MarketOptimizer
from ..vendors import Vendors, draw_vendors

Attribution = Callable[[torch.Tensor], torch.Tensor]  # losses [P] -> A [P]


def best_path_attribution(losses: torch.Tensor) -> torch.Tensor:
    """1 on the lowest-loss path, 0 elsewhere: reconciled, this is V1's step (section 4)."""
    a = torch.zeros_like(losses, dtype=torch.float32)
    a[int(torch.argmin(losses))] = 1.0
    return a


def random_subspace_cosine(n: int, d: int) -> float:
    """E cos(g, P g) for P the projection onto a uniformly random n-dim subspace of R^d.

    cos^2 is Beta(n/2, (d-n)/2), so E cos = Gamma((n+1)/2) Gamma(d/2) /
    (Gamma(n/2) Gamma((d+1)/2)), which tends to sqrt(n/d) for large d.
    """
    if not 0 <= n <= d or d < 1:
        raise MarketplaceError(f"a subspace of {n} directions in {d} parameters does not exist")
    if n == 0:
        return 0.0
    return math.exp(math.lgamma((n + 1) / 2) + math.lgamma(d / 2) - math.lgamma(n / 2) - math.lgamma((d + 1) / 2))


def projection(g: torch.Tensor, deltas: torch.Tensor) -> tuple[float, int]:
    """(||P g||, rank) with P the orthogonal projection onto the span of the rows of deltas [n, d].

    Exact least squares in float64 (an SVD of the n x d probe matrix); zero
    rows (the leader) and dependent rows add nothing to the span.
    """
    if deltas.numel() == 0:
        return 0.0, 0
    _, s, vh = torch.linalg.svd(deltas.double(), full_matrices=False)  # rows of vh span the rows of deltas
    keep = s > s.max() * max(deltas.shape) * torch.finfo(torch.float64).eps
    return float((vh[keep] @ g.double()).norm()), int(keep.sum())


def true_gradient(market: Market, x: torch.Tensor, y: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    """Mean cross-entropy of the base weights on (x, y) and its gradient, flat per spec [numel_k].

    The specs run through `functional_call` on flat copies of their
    parameters, so the market's own weights keep no .grad.
    """
    flats = [market.flat_parameters(k).requires_grad_(True) for k in range(market.depth)]
    h = x
    with torch.enable_grad():
        for k, spec in enumerate(market.specs):
            h = functional_call(spec, market.layouts[k].split(flats[k]), (h,))
        loss = F.cross_entropy(h.float(), y)
        grads = torch.autograd.grad(loss, [f for f in flats if f.numel()], allow_unused=True)
    it = iter(grads)
    out = []
    for f in flats:
        g = next(it) if f.numel() else None
        out.append(torch.zeros_like(f) if g is None else g.detach())
    return float(loss.detach()), out


def market_directions(market: Market, vendors: Vendors, losses: torch.Tensor, paths: torch.Tensor,
                      attribution: Attribution = standardized_attribution, per_spec: bool = True,
                      ) -> list[torch.Tensor]:
    """G_k from the losses of the paths, as V2 computes it (attribution -> per-vendor sums -> R_k -> unit)."""
    per_vendor = vendor_attribution(attribution(losses), paths, market.vendor_counts)
    device = market.device
    reconciled = [reconcile(a.to(device), vendors.deltas(k, market.layouts[k].numel, device))
                  for k, a in enumerate(per_vendor)]
    return unit_directions(reconciled, per_spec=per_spec)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = a.double().norm(), b.double().norm()
    return float(a.double() @ b.double() / (na * nb)) if bool(na > 0) and bool(nb > 0) else 0.0


@dataclass
class Alignment:
    """The alignment of one batch. Lists have one entry per spec; `whole` the whole model."""

    loss: float  # mean cross-entropy of the base weights on the batch
    cosine: list[float]
    best_cosine: list[float]
    random_cosine: list[float]
    directions: list[int]  # n_k: independent probe directions of spec k (non-leader vendors)
    params: list[int]  # d_k
    grad_share: list[float]  # ||g_k||^2 / ||g||^2
    whole: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"loss": self.loss, "cosine": self.cosine, "best_cosine": self.best_cosine,
                "random_cosine": self.random_cosine, "directions": self.directions, "params": self.params,
                "grad_share": self.grad_share, "whole": self.whole}


@dataclass
class _Probe:
    """What one batch gives every estimator alike: path losses, the true gradient, the probes' spans."""

    losses: torch.Tensor
    paths: torch.Tensor
    loss: float
    grads: list[torch.Tensor]
    projected: list[float]  # ||P_k g_k||
    ranks: list[int]


@torch.no_grad()
def _probe(market: Market, vendors: Vendors, x: torch.Tensor, y: torch.Tensor) -> _Probe:
    out = market.evaluate(x, vendors)
    loss, grads = true_gradient(market, x, y)
    projected, ranks = [], []
    for k, g in enumerate(grads):
        p, n = projection(g, vendors.deltas(k, market.layouts[k].numel, market.device))
        projected.append(p)
        ranks.append(n)
    return _Probe(path_losses(out.products, y), out.paths, loss, grads, projected, ranks)


@torch.no_grad()
def _measure(market: Market, lr: Sequence[float], vendors: Vendors, probe: _Probe, attribution: Attribution,
             per_spec: bool) -> Alignment:
    directions = market_directions(market, vendors, probe.losses, probe.paths, attribution, per_spec)
    grads, dims = probe.grads, probe.ranks
    params = [g.numel() for g in grads]
    norms = [float(g.double().norm()) for g in grads]
    total = sum(n ** 2 for n in norms)
    share = [n ** 2 / total if total > 0 else 0.0 for n in norms]
    step = torch.cat([r * s for r, s in zip(lr, directions)])
    whole = {
        "cosine": _cos(step, -torch.cat(grads)),
        # the spans of the specs' probes are orthogonal blocks: ||P g||^2 adds up over specs
        "best_cosine": math.sqrt(sum(p ** 2 for p in probe.projected) / total) if total > 0 else 0.0,
        # each spec perfect within its span, then scaled to lr_k as V2 does: what per-spec unit vectors allow
        "best_cosine_spec_unit": (sum(r * p for r, p in zip(lr, probe.projected))
                                  / (math.sqrt(sum(r * r for r in lr)) * math.sqrt(total)) if total > 0 else 0.0),
        "random_cosine": random_subspace_cosine(sum(dims), sum(params)),
        # a random n_k-dim subspace in each spec's block, weighted by the gradient's share there
        "random_cosine_blocked": math.sqrt(sum(s * n / d for s, n, d in zip(share, dims, params))),
        "directions": sum(dims), "params": sum(params),
    }
    return Alignment(
        loss=probe.loss,
        cosine=[_cos(s, -g) for s, g in zip(directions, grads)],
        best_cosine=[p / n if n > 0 else 0.0 for p, n in zip(probe.projected, norms)],
        random_cosine=[random_subspace_cosine(n, d) for n, d in zip(dims, params)],
        directions=list(dims), params=params, grad_share=share, whole=whole,
    )


def alignment(market: Market, optimizer: MarketOptimizer, x: torch.Tensor, y: torch.Tensor, *,
              vendors: Vendors | None = None, attribution: Attribution = standardized_attribution,
              per_spec: bool | None = None) -> Alignment:
    """Cosines between the market's direction on (x, y) and the true negative gradient there.

    vendors: default the optimizer's current ones. attribution: losses ->
    A_i (z-scores as in V2; `centered_rank_attribution`,
    `best_path_attribution` for V1's step). per_spec: default the
    optimizer's own (True for V1); it only changes the whole-model figures,
    which combine the specs' directions scaled by their learning rates as
    the step does.
    """
    vendors = optimizer.vendors if vendors is None else vendors
    per_spec = getattr(optimizer, "per_spec", True) if per_spec is None else per_spec
    return _measure(market, optimizer.lr, vendors, _probe(market, vendors, x, y), attribution, per_spec)


@dataclass
class AlignmentSummary:
    """Means and standard errors over batches of every figure of `Alignment`."""

    batches: int
    mean: dict
    stderr: dict
    per_batch: list[dict]

    def as_dict(self) -> dict:
        return {"batches": self.batches, "mean": self.mean, "stderr": self.stderr}


def _mean_and_stderr(values: Sequence) -> tuple:
    if isinstance(values[0], dict):
        keys = values[0].keys()
        pairs = {k: _mean_and_stderr([v[k] for v in values]) for k in keys}
        return {k: m for k, (m, _) in pairs.items()}, {k: s for k, (_, s) in pairs.items()}
    if isinstance(values[0], list):
        cols = [_mean_and_stderr(list(c)) for c in zip(*values)]
        return [m for m, _ in cols], [s for _, s in cols]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    stderr = float(t.std() / math.sqrt(len(t))) if len(t) > 1 else 0.0
    return float(t.mean()), stderr


def compare_alignment(market: Market, optimizer: MarketOptimizer,
                      batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                      estimators: Mapping[str, tuple[Attribution, bool]]) -> dict[str, AlignmentSummary]:
    """`alignment` of several estimators (name -> (attribution, per_spec)), averaged over batches.

    Every estimator sees the same batches, vendors and path losses (a
    paired comparison; the market runs once per batch). The weights do not
    move: every batch is measured at the same point, with the vendors the
    optimizer would draw at step `optimizer.steps + i` (batch 0 uses
    `optimizer.vendors`).
    """
    if not estimators:
        raise MarketplaceError("compare_alignment needs at least one estimator")
    results: dict[str, list[dict]] = {name: [] for name in estimators}
    widths = optimizer.probe_widths()
    for i, (x, y) in enumerate(batches):
        vendors = draw_vendors(optimizer.seed, optimizer.steps + i, market.vendor_counts, widths,
                               optimizer.cache_deltas)
        probe = _probe(market, vendors, x, y)
        for name, (attribution, per_spec) in estimators.items():
            results[name].append(_measure(market, optimizer.lr, vendors, probe, attribution, per_spec).as_dict())
    if not next(iter(results.values())):
        raise MarketplaceError("alignment needs at least one batch")
    summaries = {}
    for name, rows in results.items():
        mean, stderr = _mean_and_stderr(rows)
        summaries[name] = AlignmentSummary(len(rows), mean, stderr, rows)
    return summaries


def mean_alignment(market: Market, optimizer: MarketOptimizer,
                   batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                   attribution: Attribution = standardized_attribution,
                   per_spec: bool | None = None) -> AlignmentSummary:
    """`alignment` averaged over batches, with fresh vendors for each (see `compare_alignment`)."""
    per_spec = getattr(optimizer, "per_spec", True) if per_spec is None else per_spec
    return compare_alignment(market, optimizer, batches, {"": (attribution, per_spec)})[""]
