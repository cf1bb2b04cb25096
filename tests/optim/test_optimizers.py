import pytest
import torch

from helpers import toy_problem
from marketplace import V1, V2, AdaptiveV2, NonFiniteLossError, path_losses

OPTIMIZERS = {
    "v1": lambda m, **kw: V1(m, lr=0.05, **kw),
    "v2": lambda m, **kw: V2(m, lr=0.2, probe_scale=0.5, **kw),
    "adaptive": lambda m, **kw: AdaptiveV2(m, lr=0.2, probe_scale=0.5, meta_lr=0.5, **kw),
}


def problem(seed=0):
    return toy_problem(seed)


def run(opt, market, x, y, steps):
    closure = lambda v: (lambda out: (path_losses(out.products, y), out.paths))(market.evaluate(x, v))
    for _ in range(steps):
        losses, paths = closure(opt.vendors)
        opt.step(losses, paths, closure)


def full_loss(market, x, y):
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(market(x), y))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_lowers_the_loss(name):
    market, x, y = problem()
    before = full_loss(market, x, y)
    opt = OPTIMIZERS[name](market, seed=1)
    run(opt, market, x, y, 60)
    assert full_loss(market, x, y) < 0.8 * before
    assert opt.steps == 60


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_resumes_the_same_run(name):
    market_a, x, y = problem()
    opt_a = OPTIMIZERS[name](market_a, seed=3, decay=0.01)
    run(opt_a, market_a, x, y, 10)

    market_b, _, _ = problem()
    opt_b = OPTIMIZERS[name](market_b, seed=3, decay=0.01)
    run(opt_b, market_b, x, y, 4)
    saved_model, saved_opt = market_b.state_dict(), opt_b.state_dict()

    market_c, _, _ = problem()
    market_c.load_state_dict(saved_model)
    opt_c = OPTIMIZERS[name](market_c, seed=99)  # everything comes from the state
    opt_c.load_state_dict(saved_opt)
    assert opt_c.lr == opt_b.lr and opt_c.steps == 4 and opt_c.seed == 3
    run(opt_c, market_c, x, y, 6)
    for a, c in zip(market_a.state_dict().values(), market_c.state_dict().values()):
        assert torch.equal(a, c)
    assert opt_c.lr == opt_a.lr


def test_two_workers_with_the_same_seed_end_identical():
    """Only seeds are shared: two replicas fed the same batches stay bit-identical."""
    (m1, x, y), (m2, _, _) = problem(), problem()
    o1, o2 = V2(m1, lr=0.05, seed=5), V2(m2, lr=0.05, seed=5)
    run(o1, m1, x, y, 5)
    run(o2, m2, x, y, 5)
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    o3 = V2(problem()[0], lr=0.05, seed=6)
    assert not torch.equal(o3.vendors.seeds[0], o1.vendors.seeds[0])


def test_v2_step_moves_each_spec_by_lr():
    market, x, y = problem()
    opt = V2(market, lr=0.03, per_spec=True)
    before = [market.flat_parameters(k) for k in range(2)]
    run(opt, market, x, y, 1)
    for k in range(2):
        assert float((market.flat_parameters(k) - before[k]).norm()) == pytest.approx(0.03, rel=1e-4)


def test_decay_shrinks_the_rate():
    market, x, y = problem()
    opt = V2(market, lr=0.1, decay=0.5)
    run(opt, market, x, y, 2)
    assert opt.lr == [pytest.approx(0.025)] * 2
    assert opt.vendors.sigma == (pytest.approx(0.0025),) * 2


def test_nonfinite_losses_raise_or_skip_and_never_touch_the_weights():
    market, x, y = problem()
    before = [p.clone() for p in market.parameters()]
    opt = V2(market, lr=0.1)
    out = market.evaluate(x, opt.vendors)
    losses = path_losses(out.products, y)
    losses[3] = float("nan")
    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        opt.step(losses, out.paths)
    skipping = V2(market, lr=0.1, on_nonfinite="skip")
    with pytest.warns(RuntimeWarning, match="skipped"):
        assert skipping.step(losses, out.paths) is False
    assert skipping.steps == 1 and skipping.skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(before, market.parameters()))


@pytest.mark.parametrize("kwargs,message", [
    (dict(lr=0.0), "Invalid learning rate"),
    (dict(lr=float("nan")), "Invalid learning rate"),
    (dict(lr=[0.1]), "1 rates for a market of 2 specs"),
    (dict(lr=0.1, decay=1.0), "Invalid decay"),
    (dict(lr=0.1, probe_scale=-1), "Invalid probe_scale"),
    (dict(lr=0.1, on_nonfinite="ignore"), "Invalid on_nonfinite"),
])
def test_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        V2(problem()[0], **kwargs)


def test_per_spec_learning_rates_and_repr():
    opt = V2(problem()[0], lr=[0.1, 0.01])
    assert opt.vendors.sigma == (pytest.approx(0.01), pytest.approx(0.001))
    assert "V2(lr=[0.1, 0.01]" in repr(opt)


def test_load_state_dict_refuses_another_algorithm():
    market = problem()[0]
    with pytest.raises(Exception, match="'v1' optimizer, not 'v2'"):
        V2(market, lr=0.1).load_state_dict(V1(market, lr=0.1).state_dict())


def test_adaptive_needs_a_closure_and_adapts_the_rate():
    market, x, y = problem()
    opt = AdaptiveV2(market, lr=0.05, meta_lr=0.5)
    out = market.evaluate(x, opt.vendors)
    with pytest.raises(Exception, match="needs a closure"):
        opt.step(path_losses(out.products, y), out.paths)
    market, x, y = problem()
    opt = AdaptiveV2(market, lr=0.05, meta_lr=0.5, decay=0.1)
    run(opt, market, x, y, 3)
    assert opt.lr != [0.05, 0.05]  # the rates moved
    assert opt.meta_lr == pytest.approx(0.5 * 0.9**3)
