"""ForwardGradient: the market's estimate in .grad, driven by torch.optim."""

import pytest
import torch

from marketplace import V2, Market, MarketplaceError, NonFiniteLossError, path_losses
from marketplace.models import mlp
from marketplace.optim import ForwardGradient, TorchMarketOptimizer


def problem(seed=0, vendors=(4, 4)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        market = Market(mlp([8, 16, 3]), vendors=list(vendors))
    return market, x, y


def losses_of(market, vendors, x, y):
    out = market.evaluate(x, vendors)
    return path_losses(out.products, y), out.paths


def full_loss(market, x, y):
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(market(x), y))


def test_sgd_on_the_estimate_is_v2_bit_for_bit():
    """SGD(lr) + ExponentialLR(1 - decay) on ForwardGradient = V2(lr, decay), weights and rates equal."""
    reference, x, y = problem()
    v2 = V2(reference, lr=0.2, probe_scale=0.5, decay=0.01, seed=3)
    market, _, _ = problem()
    sgd = torch.optim.SGD([{"params": list(s.parameters())} for s in market.specs], lr=0.2)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(sgd, 1 - 0.01)
    estimator = ForwardGradient(market, sgd, probe_scale=0.5, seed=3)
    for _ in range(6):
        v2.step(*losses_of(reference, v2.vendors, x, y))
        estimator.backward(*losses_of(market, estimator.vendors, x, y))
        sgd.step()
        scheduler.step()
        assert sgd.param_groups[0]["lr"] == v2.lr[0]
    for a, b in zip(reference.parameters(), market.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=0.01),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
])
def test_torch_optimizers_lower_the_loss(make):
    market, x, y = problem()
    before = full_loss(market, x, y)
    opt = make(market.parameters())
    estimator = ForwardGradient(market, opt, probe_width=0.05, seed=1)
    for _ in range(40):
        estimator.backward(*losses_of(market, estimator.vendors, x, y))
        opt.step()
    assert full_loss(market, x, y) < 0.8 * before


def test_probe_width_follows_the_scheduled_rate_per_group():
    market, _, _ = problem()
    opt = torch.optim.SGD([{"params": list(market.specs[0].parameters()), "lr": 0.2},
                           {"params": list(market.specs[1].parameters()), "lr": 0.1}], lr=0.1)
    estimator = ForwardGradient(market, opt, probe_scale=0.5)
    assert estimator.vendors.sigma == (0.1, 0.05)
    opt.param_groups[0]["lr"] = 0.02
    assert estimator.vendors.sigma == (0.1, 0.05)  # drawn once per step
    estimator.advance()
    assert estimator.vendors.sigma == (0.01, 0.05)


def test_options_change_the_estimate():
    market, x, y = problem()
    opt = torch.optim.SGD(market.parameters(), lr=0.1)
    base = ForwardGradient(market, opt, probe_scale=0.5)
    losses, paths = losses_of(market, base.vendors, x, y)
    unit = base.estimate(losses, paths)
    assert all(abs(float(d.norm()) - 1) < 1e-5 for d in unit)
    raw = ForwardGradient(market, opt, probe_scale=0.5, direction="raw").estimate(losses, paths)
    for u, r in zip(unit, raw):  # the same direction, the length of R / sigma
        torch.testing.assert_close(u, r / r.norm())
        assert float(r.norm()) > 2
    ranked = ForwardGradient(market, opt, probe_scale=0.5, attribution="rank").estimate(losses, paths)
    assert all(0.5 < float(torch.dot(u, q)) < 1 - 1e-4 for u, q in zip(unit, ranked))


def test_antithetic_vendors_mirror_in_pairs():
    market, _, _ = problem(vendors=(5, 4))
    opt = torch.optim.SGD(market.parameters(), lr=0.1)
    estimator = ForwardGradient(market, opt, antithetic=True)
    d = estimator.vendors.deltas(0, market.layouts[0].numel, torch.device("cpu"))
    assert torch.equal(d[0], torch.zeros_like(d[0]))
    assert torch.equal(d[2], -d[1]) and torch.equal(d[4], -d[3])
    d = estimator.vendors.deltas(1, market.layouts[1].numel, torch.device("cpu"))
    assert torch.equal(d[2], -d[1]) and not torch.equal(d[3], -d[2])  # M=4: the last is unpaired


def test_a_nonfinite_loss_leaves_grad_alone():
    market, x, y = problem()
    opt = torch.optim.SGD(market.parameters(), lr=0.1)
    estimator = ForwardGradient(market, opt)
    losses, paths = losses_of(market, estimator.vendors, x, y)
    losses[3] = float("nan")
    with pytest.raises(NonFiniteLossError):
        estimator.backward(losses, paths)
    assert all(p.grad is None for p in market.parameters()) and estimator.steps == 0


def test_wrapper_resumes_exactly_with_adam_and_a_schedule():
    """state_dict mid-run, load into fresh objects: the same weights as a run never interrupted."""
    def make(market):
        opt = torch.optim.Adam(market.parameters(), lr=0.01)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        return TorchMarketOptimizer(ForwardGradient(market, opt, probe_width=0.05, seed=2), opt, sched, clip=5.0)

    def run(opt, market, x, y, steps):
        for _ in range(steps):
            opt.step(*losses_of(market, opt.vendors, x, y))

    market, x, y = problem()
    whole = make(market)
    run(whole, market, x, y, 8)
    first, _, _ = problem()
    half = make(first)
    run(half, first, x, y, 4)
    state = half.state_dict()
    second, _, _ = problem()
    second.load_state_dict(first.state_dict())
    resumed = make(second)
    resumed.load_state_dict(state)
    run(resumed, second, x, y, 4)
    assert resumed.steps == 8 and resumed.lr == whole.lr
    for a, b in zip(market.parameters(), second.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    (dict(attribution="median"), "attribution"),
    (dict(direction="sideways"), "direction"),
    (dict(probe_width=[0.1]), "probe_width"),
    (dict(probe_scale=0), "probe_scale"),
])
def test_arguments_are_validated(kwargs, message):
    market, _, _ = problem()
    with pytest.raises(ValueError, match=message):
        ForwardGradient(market, torch.optim.SGD(market.parameters(), lr=0.1), **kwargs)


def test_a_spec_split_over_groups_is_refused():
    market, _, _ = problem()
    params = list(market.specs[0].parameters())
    opt = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:] + list(market.specs[1].parameters())}],
                          lr=0.1)
    with pytest.raises(MarketplaceError, match="split over param groups"):
        ForwardGradient(market, opt)


def test_an_optimizer_over_the_trainable_parameters_only():
    """Frozen weights are never perturbed: an optimizer need not hold them, and they stay as they were."""
    market, x, y = problem()
    frozen = next(p for p in market.specs[0].parameters() if p.dim() == 2)
    frozen.requires_grad_(False)
    market = Market(market.specs, vendors=[4, 4])
    kept = frozen.clone()
    opt = torch.optim.Adam([p for p in market.parameters() if p.requires_grad], lr=0.01)
    estimator = ForwardGradient(market, opt, probe_width=0.05, seed=1)
    before = full_loss(market, x, y)
    for _ in range(20):
        estimator.backward(*losses_of(market, estimator.vendors, x, y))
        opt.step()
    assert torch.equal(frozen, kept) and full_loss(market, x, y) < before
    missing = torch.optim.SGD([p for p in market.specs[1].parameters()], lr=0.1)
    with pytest.raises(MarketplaceError, match="spec 0 has trainable parameters the optimizer does not hold"):
        ForwardGradient(market, missing)
