"""The alignment diagnostic: each figure against a reference computed another way."""

import math

import pytest
import torch
import torch.nn.functional as F

from marketplace import V1, V2, Market, MarketplaceError, draw_vendors, path_losses
from marketplace.diagnostics import (alignment, best_path_attribution, compare_alignment, market_directions,
                                     mean_alignment, projection, random_subspace_cosine, true_gradient)
from marketplace.functional import centered_rank_attribution
from marketplace.models import mlp


def _data(n=32, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _market(vendors=(3, 4), sizes=(6, 5, 3), seed=0):
    torch.manual_seed(seed)
    return Market(mlp(list(sizes)), list(vendors))


def test_random_subspace_cosine_exact_limits_and_monte_carlo():
    assert random_subspace_cosine(7, 7) == pytest.approx(1.0)
    assert random_subspace_cosine(0, 9) == 0.0
    assert random_subspace_cosine(1000, 10**6) == pytest.approx(math.sqrt(1000 / 10**6), rel=1e-3)
    # with few directions E cos lies below sqrt(n/d) (Jensen): by about 1/(4n)
    assert random_subspace_cosine(10, 100_000) == pytest.approx(math.sqrt(10 / 100_000) * (1 - 1 / 40), rel=2e-3)
    g = torch.Generator().manual_seed(0)
    d, n, draws = 12, 3, 4000
    basis = torch.linalg.qr(torch.randn(draws, d, n, generator=g, dtype=torch.float64)).Q  # random subspaces
    v = torch.randn(d, dtype=torch.float64, generator=g)
    cos = (basis.transpose(1, 2) @ v).norm(dim=1) / v.norm()
    assert float(cos.mean()) == pytest.approx(random_subspace_cosine(n, d), abs=0.01)
    with pytest.raises(MarketplaceError):
        random_subspace_cosine(5, 4)


def test_projection_is_least_squares_and_ignores_the_leader():
    g = torch.Generator().manual_seed(1)
    deltas = torch.cat([torch.zeros(1, 50), torch.randn(4, 50, generator=g)])  # row 0: the leader
    v = torch.randn(50, generator=g)
    coef = torch.linalg.lstsq(deltas[1:].double().T, v.double()[:, None]).solution
    norm, rank = projection(v, deltas)
    assert rank == 4
    assert norm == pytest.approx(float((deltas[1:].double().T @ coef).norm()), rel=1e-9)
    inside = deltas[1:].T @ torch.tensor([0.5, -1.0, 2.0, 0.0])
    assert projection(inside, deltas)[0] == pytest.approx(float(inside.norm()), rel=1e-6)


def test_true_gradient_is_backprop_of_the_mean_cross_entropy():
    market = _market()
    x, y = _data()
    loss, grads = true_gradient(market, x, y)
    reference = F.cross_entropy(market(x), y)
    reference.backward()
    assert loss == pytest.approx(float(reference.detach()), rel=1e-6)
    for k, g in enumerate(grads):
        params = dict(market.specs[k].named_parameters())
        flat = torch.cat([params[n].grad.reshape(-1) for n in market.layouts[k].names])
        torch.testing.assert_close(g, flat)


def test_market_direction_is_the_step_v2_takes():
    x, y = _data()
    for per_spec in (True, False):
        market = _market()
        opt = V2(market, lr=0.2, probe_scale=0.1, per_spec=per_spec, seed=5)
        out = market.evaluate(x, opt.vendors)
        losses = path_losses(out.products, y)
        expected = market_directions(market, opt.vendors, losses, out.paths, per_spec=per_spec)
        before = [market.flat_parameters(k) for k in range(market.depth)]
        opt.step(losses, out.paths)
        for k in range(market.depth):
            torch.testing.assert_close((market.flat_parameters(k) - before[k]) / 0.2, expected[k],
                                       rtol=1e-4, atol=1e-5)


def test_best_path_attribution_is_the_step_v1_takes():
    market, x, y = _market(), *_data()
    opt = V1(market, lr=0.05, seed=2)
    out = market.evaluate(x, opt.vendors)
    losses = path_losses(out.products, y)
    unit = market_directions(market, opt.vendors, losses, out.paths, best_path_attribution)
    before = [market.flat_parameters(k) for k in range(market.depth)]
    opt.step(losses, out.paths)
    for k in range(market.depth):
        moved = market.flat_parameters(k) - before[k]
        assert F.cosine_similarity(moved, unit[k], dim=0) > 0.9999 or (moved.norm() == 0 and unit[k].norm() == 0)


def test_the_step_never_beats_the_best_in_its_span():
    market, x, y = _market(vendors=(4, 3)), *_data()
    opt = V2(market, lr=0.3, probe_scale=0.1)
    for attribution in (None, centered_rank_attribution, best_path_attribution):
        a = alignment(market, opt, x, y, **({"attribution": attribution} if attribution else {}))
        assert a.directions == [3, 2] and a.params == [market.layouts[k].numel for k in range(2)]
        for c, b in zip(a.cosine, a.best_cosine):
            assert abs(c) <= b + 1e-9
        assert abs(a.whole["cosine"]) <= a.whole["best_cosine_spec_unit"] + 1e-9  # per-spec unit vectors...
        assert a.whole["best_cosine_spec_unit"] <= a.whole["best_cosine"] + 1e-9  # ...cost a little more
        assert sum(a.grad_share) == pytest.approx(1.0)


def test_many_vendors_on_few_parameters_find_the_gradient():
    """With far more probes than parameters and a small width, V2's direction is -grad (the sign matters)."""
    torch.manual_seed(0)
    market = Market(mlp([4, 3]), vendors=[400])  # 15 parameters, 399 probes
    x, y = _data(n=64, d=4)
    opt = V2(market, lr=0.01, probe_scale=0.1)
    a = alignment(market, opt, x, y)
    assert a.best_cosine[0] == pytest.approx(1.0)
    assert a.cosine[0] > 0.95
    assert a.whole["cosine"] == pytest.approx(a.cosine[0])


def test_compare_alignment_shares_batches_and_vendors():
    market, (x, y) = _market(), _data()
    opt = V2(market, lr=0.2, probe_scale=0.1, seed=3)
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    both = compare_alignment(market, opt, batches, {"a": (centered_rank_attribution, True),
                                                     "b": (centered_rank_attribution, True)})
    assert both["a"].mean == both["b"].mean and both["a"].batches == 2
    first = alignment(market, opt, x[:16], y[:16], attribution=centered_rank_attribution)
    assert both["a"].per_batch[0] == first.as_dict()  # batch 0 uses the optimizer's own vendors
    second = alignment(market, opt, x[16:], y[16:], vendors=draw_vendors(3, 1, market.vendor_counts, opt.probe_widths()),
                       attribution=centered_rank_attribution)
    assert both["a"].per_batch[1] == second.as_dict()
    mean = mean_alignment(market, opt, batches, attribution=centered_rank_attribution)
    assert mean.mean == both["a"].mean
    assert mean.mean["cosine"][0] == pytest.approx((first.cosine[0] + second.cosine[0]) / 2)
    with pytest.raises(MarketplaceError):
        mean_alignment(market, opt, [])
