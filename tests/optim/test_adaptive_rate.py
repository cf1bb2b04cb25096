"""The stabilised adaptive rate: bounds, smoothing, today's behaviour by default, exact resume."""

import pytest
import torch

from helpers import toy_problem
from marketplace import AdaptiveV2, path_losses
from marketplace.functional import best_path
from marketplace.optim.adaptive import bounded_steps, smoothed_rate


def problem(seed=0):
    return toy_problem(seed, examples=128, vendors=(3, 3))


def run(opt, market, x, y, steps):
    """Train `steps` steps; per step the kept rates before, the rates the second pass chose, and after."""
    record = []

    def evaluate(v):
        out = market.evaluate(x, v)
        return path_losses(out.products, y), out.paths

    def closure(rate_vendors):
        losses, paths = evaluate(rate_vendors)
        best = best_path(losses, paths).tolist()
        chosen.extend(float(rate_vendors.steps[k][j]) for k, j in enumerate(best))
        return losses, paths

    for _ in range(steps):
        before, chosen = list(opt.lr), []
        opt.step(*evaluate(opt.vendors), closure)
        record.append((before, chosen, list(opt.lr)))
    return record


# -- the pure functions -------------------------------------------------------


def test_bounded_steps_clamps_relative_to_the_initial_rate():
    steps = torch.tensor([0.05, 0.1, 0.3])
    assert torch.equal(bounded_steps(steps, 0.1, (0.8, 2.0)), torch.tensor([0.08, 0.1, 0.2]))
    assert bounded_steps(steps, 0.1, None) is steps


def test_smoothed_rate_is_an_exponential_moving_average():
    assert smoothed_rate(0.1, 0.3, 0.75) == pytest.approx(0.75 * 0.1 + 0.25 * 0.3)
    assert smoothed_rate(0.1, 0.3, 0.0) == 0.3


# -- the optimizer ------------------------------------------------------------


def test_bounds_hold_over_many_steps_where_the_free_rate_leaves_them():
    lo, hi, lr0 = 0.8, 1.25, 0.1
    market, x, y = problem()
    free = [r for _, _, after in run(AdaptiveV2(market, lr=lr0, meta_lr=0.5, seed=1), market, x, y, 150) for r in after]
    assert min(free) < lo * lr0 or max(free) > hi * lr0  # otherwise this test proves nothing

    market, x, y = problem()
    record = run(AdaptiveV2(market, lr=lr0, meta_lr=0.5, seed=1, rate_bounds=(lo, hi)), market, x, y, 150)
    rates = [r for _, chosen, after in record for r in chosen + after]
    assert all(lo * lr0 * (1 - 1e-6) <= r <= hi * lr0 * (1 + 1e-6) for r in rates)
    assert max(rates) == pytest.approx(hi * lr0) or min(rates) == pytest.approx(lo * lr0)  # it did bind


def test_smoothing_keeps_the_ema_of_the_chosen_rates():
    beta = 0.9
    market, x, y = problem()
    record = run(AdaptiveV2(market, lr=0.1, meta_lr=0.5, seed=2, rate_smoothing=beta), market, x, y, 30)
    for before, chosen, after in record:
        assert len(chosen) == len(after) == 2
        for k in range(2):
            assert after[k] == pytest.approx(beta * before[k] + (1 - beta) * chosen[k], rel=1e-12)
    assert any(c != a for _, chosen, after in record for c, a in zip(chosen, after))  # the EMA lags the choice


def test_defaults_keep_the_chosen_rate_and_loose_bounds_change_nothing():
    market_a, x, y = problem()
    record = run(AdaptiveV2(market_a, lr=0.1, meta_lr=0.5, seed=3), market_a, x, y, 20)
    assert all(chosen == after for _, chosen, after in record)  # bit for bit: the kept rate is the chosen one

    market_b, _, _ = problem()
    loose = AdaptiveV2(market_b, lr=0.1, meta_lr=0.5, seed=3, rate_bounds=(1e-6, 1e6), rate_smoothing=0.0)
    assert [after for *_, after in run(loose, market_b, x, y, 20)] == [after for *_, after in record]
    for a, b in zip(market_a.state_dict().values(), market_b.state_dict().values()):
        assert torch.equal(a, b)


def test_state_dict_restores_bounds_smoothing_and_the_initial_rate():
    settings = dict(meta_lr=0.5, seed=4, decay=0.01, rate_bounds=(0.7, 1.5), rate_smoothing=0.8)
    market_a, x, y = problem()
    opt_a = AdaptiveV2(market_a, lr=0.1, **settings)
    run(opt_a, market_a, x, y, 12)

    market_b, _, _ = problem()
    opt_b = AdaptiveV2(market_b, lr=0.1, **settings)
    run(opt_b, market_b, x, y, 5)
    market_c, _, _ = problem()
    market_c.load_state_dict(market_b.state_dict())
    opt_c = AdaptiveV2(market_c, lr=0.3, meta_lr=0.2)  # no bounds, no smoothing: all of it comes from the state
    opt_c.load_state_dict(opt_b.state_dict())
    assert (opt_c.rate_bounds, opt_c.rate_smoothing, opt_c.lr0) == ((0.7, 1.5), 0.8, [0.1, 0.1])
    run(opt_c, market_c, x, y, 7)
    for a, c in zip(market_a.state_dict().values(), market_c.state_dict().values()):
        assert torch.equal(a, c)
    assert opt_c.lr == opt_a.lr and opt_c.meta_lr == opt_a.meta_lr


@pytest.mark.parametrize("kwargs, message", [
    (dict(rate_bounds=(1.2, 2.0)), "rate_bounds"),  # the initial rate must lie inside
    (dict(rate_bounds=(0.5, 0.9)), "rate_bounds"),
    (dict(rate_bounds=(0.0, 2.0)), "rate_bounds"),
    (dict(rate_bounds=(0.5,)), "rate_bounds"),
    (dict(rate_bounds=(0.5, float("inf"))), "rate_bounds"),
    (dict(rate_smoothing=1.0), "rate_smoothing"),
    (dict(rate_smoothing=-0.1), "rate_smoothing"),
])
def test_stabiliser_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        AdaptiveV2(problem()[0], lr=0.1, **kwargs)
    assert "\n" not in str(info.value)
