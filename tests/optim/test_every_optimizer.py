"""One suite over every market optimizer: V1, V2, AdaptiveV2 and the torch.optim bridge (SGD, Adam).

Each is an update rule over one ForwardGradient, so each must show the same
surface, resume exactly from its state, follow the same non-finite policy
and check its arguments the same way.
"""

import pytest
import torch

from helpers import toy_problem
from marketplace import MarketplaceError, NonFiniteLossError, path_losses
from marketplace.optim import (V1, V2, AdaptiveV2, ForwardGradient, MarketOptimizer, MarketOptimizerProtocol,
                               TorchMarketOptimizer, canonical_algorithm)
from marketplace.training.checkpoint import load_checkpoint, save_checkpoint


def sgd(market, seed=0, on_nonfinite="raise", lr=0.2, scheduler=None):
    opt = torch.optim.SGD([{"params": list(s.parameters())} for s in market.specs], lr=lr)
    sched = scheduler(opt) if scheduler else None
    return TorchMarketOptimizer(ForwardGradient(market, opt, probe_scale=0.5, seed=seed), opt, sched,
                                on_nonfinite=on_nonfinite)


def adam(market, seed=0, on_nonfinite="raise"):
    opt = torch.optim.Adam(market.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    return TorchMarketOptimizer(ForwardGradient(market, opt, probe_width=0.05, seed=seed, direction="raw"), opt,
                                sched, clip=5.0, on_nonfinite=on_nonfinite)


OPTIMIZERS = {
    "v1": lambda m, **kw: V1(m, lr=0.05, lr_decay=0.01, **kw),
    "v2": lambda m, **kw: V2(m, lr=0.2, probe_scale=0.5, lr_decay=0.01, **kw),
    "adaptive": lambda m, **kw: AdaptiveV2(m, lr=0.2, probe_scale=0.5, meta_lr=0.5, meta_lr_decay=0.01,
                                           rate_bounds=(0.5, 2.0), rate_smoothing=0.5, **kw),
    "torch-sgd": sgd,
    "torch-adam": adam,
}
every_optimizer = pytest.mark.parametrize("name", OPTIMIZERS)


def problem(seed=0):
    return toy_problem(seed, examples=64, vendors=(3, 3))


def evaluate(market, x, y):
    return lambda vendors: (lambda out: (path_losses(out.products, y), out.paths))(market.evaluate(x, vendors))


def run(opt, market, x, y, steps):
    closure = evaluate(market, x, y)
    for _ in range(steps):
        assert opt.step(*closure(opt.vendors), closure) is True


def weights(market):
    return [p.detach().clone() for p in market.parameters()]


@every_optimizer
def test_the_shared_surface(name):
    market, x, y = problem()
    opt = OPTIMIZERS[name](market, seed=1)
    assert isinstance(opt, MarketOptimizer) and isinstance(opt, MarketOptimizerProtocol)
    assert opt.steps == 0 and opt.skipped == 0 and opt.market is market
    assert len(opt.lr) == market.depth and all(r > 0 for r in opt.lr)
    assert opt.vendors.counts == tuple(market.vendor_counts)
    assert list(opt.vendors.sigma) == pytest.approx(opt.probe_widths())
    assert canonical_algorithm(opt.state_dict()["algorithm"]) == opt.algorithm
    run(opt, market, x, y, 2)
    assert opt.steps == 2 and opt.estimator.steps == 2
    assert type(opt).__name__ in repr(opt)


@every_optimizer
def test_state_dict_resumes_the_same_run_exactly(name, tmp_path):
    """Save mid-run through a checkpoint file, load into fresh objects: the run never interrupted."""
    market_a, x, y = problem()
    whole = OPTIMIZERS[name](market_a, seed=3)
    run(whole, market_a, x, y, 7)

    market_b, _, _ = problem()
    half = OPTIMIZERS[name](market_b, seed=3)
    run(half, market_b, x, y, 3)
    save_checkpoint(tmp_path / "c.safetensors", market_b.state_dict(), half.state_dict(), {})
    ckpt = load_checkpoint(tmp_path / "c.safetensors")

    market_c, _, _ = problem(seed=9)  # other starting weights: everything comes from the file
    market_c.load_state_dict(ckpt.model)
    resumed = OPTIMIZERS[name](market_c, seed=99)
    resumed.load_state_dict(ckpt.optimizer)
    assert resumed.steps == 3 and resumed.seed == 3 and resumed.lr == half.lr
    run(resumed, market_c, x, y, 4)
    assert resumed.steps == whole.steps and resumed.lr == whole.lr
    assert all(torch.equal(a, c) for a, c in zip(weights(market_a), weights(market_c)))


@every_optimizer
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nonfinite_loss_raises_and_touches_nothing(name, bad):
    market, x, y = problem()
    opt = OPTIMIZERS[name](market, seed=1)
    before = weights(market)
    losses, paths = evaluate(market, x, y)(opt.vendors)
    losses[1] = bad
    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        opt.step(losses, paths, evaluate(market, x, y))
    assert opt.steps == 0 and opt.skipped == 0
    assert all(torch.equal(a, b) for a, b in zip(before, weights(market)))
    assert all(p.grad is None for p in market.parameters())


@every_optimizer
@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # a skipped first step
def test_a_nonfinite_loss_skips_the_update_but_not_the_step(name):
    market, x, y = problem()
    opt = OPTIMIZERS[name](market, seed=1, on_nonfinite="skip")
    before, lr = weights(market), list(opt.lr)
    losses, paths = evaluate(market, x, y)(opt.vendors)
    losses[0] = float("nan")
    with pytest.warns(RuntimeWarning, match="step 0 skipped"):
        assert opt.step(losses, paths, evaluate(market, x, y)) is False
    assert opt.steps == 1 and opt.skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(before, weights(market)))
    assert opt.state_dict()["skipped"] == 1
    if name in ("v1", "v2"):
        assert opt.lr == [r * (1 - 0.01) for r in lr]  # the rate decays on a skipped step too


@every_optimizer
def test_the_same_argument_checks(name):
    market = problem()[0]
    with pytest.raises(ValueError, match="Invalid on_nonfinite: 'ignore'"):
        OPTIMIZERS[name](market, on_nonfinite="ignore")
    with pytest.raises(ValueError, match="Invalid seed: 1.5"):
        OPTIMIZERS[name](market, seed=1.5)


def test_load_refuses_another_rule_of_the_same_algorithm():
    market = problem()[0]
    with pytest.raises(MarketplaceError, match="through a torch optimizer, not by V2"):
        V2(market, lr=0.2).load_state_dict(sgd(market).state_dict())
    with pytest.raises(MarketplaceError, match="saved by V2 without a torch optimizer"):
        sgd(market).load_state_dict(V2(market, lr=0.2).state_dict())
    with pytest.raises(MarketplaceError, match="torch optimizer SGD, not Adam"):
        adam(market).load_state_dict(sgd(market).state_dict())
    with pytest.raises(MarketplaceError, match="'v1' optimizer, not 'adaptive'"):
        OPTIMIZERS["adaptive"](market).load_state_dict(V1(market, lr=0.1).state_dict())


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-1), "Invalid learning rate: -1"),
    (dict(lr=[0.1, 0.1, 0.1]), "3 rates for a market of 2 specs"),
    (dict(lr="0.1"), "Invalid learning rate: '0.1'"),
    (dict(lr_decay=1.0), "Invalid lr_decay: 1.0"),
    (dict(decay=-0.1), "Invalid decay: -0.1"),
    (dict(lr_decay=0.1, decay=0.1), "lr_decay or its old name decay, not both"),
    (dict(probe_scale=float("inf")), "Invalid probe_scale: inf"),
    (dict(seed=True), "Invalid seed: True"),
])
def test_rate_rules_check_their_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        V2(problem()[0], **{"lr": 0.1, **kwargs})


@pytest.mark.parametrize("make, message", [
    (lambda m, o: TorchMarketOptimizer(ForwardGradient(m, o), o, clip=0), "Invalid clip: 0"),
    (lambda m, o: TorchMarketOptimizer(m, o), "expected a ForwardGradient, got Market"),
    (lambda m, o: ForwardGradient(m, o, seed="1"), "Invalid seed"),
    (lambda m, o: ForwardGradient(m, o, probe_width=0.0), "Invalid probe_width: 0.0"),
    (lambda m, o: ForwardGradient(m, probe_scale=0.1), "give the optimizer"),
])
def test_the_bridge_and_the_estimator_check_their_arguments(make, message):
    market = problem()[0]
    with pytest.raises((ValueError, TypeError), match=message):
        make(market, torch.optim.SGD(market.parameters(), lr=0.1))


def test_v2_and_sgd_through_the_bridge_stay_bit_identical():
    """V2(lr) and SGD(lr) under the bridge: the same vendors, the same weights, step after step."""
    reference, x, y = problem()
    v2 = V2(reference, lr=0.2, probe_scale=0.5, seed=4)
    market, _, _ = problem()
    bridge = sgd(market, seed=4)
    for _ in range(6):
        assert all(torch.equal(a, b) for a, b in zip(v2.vendors.seeds, bridge.vendors.seeds))
        assert v2.vendors.sigma == bridge.vendors.sigma
        v2.step(*evaluate(reference, x, y)(v2.vendors))
        bridge.step(*evaluate(market, x, y)(bridge.vendors))
        assert all(torch.equal(a, b) for a, b in zip(weights(reference), weights(market)))
    assert v2.lr == bridge.lr and v2.steps == bridge.steps == 6


def test_lr_decay_is_exponential_lr_through_the_bridge():
    reference, x, y = problem()
    v2 = V2(reference, lr=0.2, probe_scale=0.5, lr_decay=0.05, seed=4)
    market, _, _ = problem()
    bridge = sgd(market, seed=4, scheduler=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 1 - 0.05))
    for _ in range(5):
        v2.step(*evaluate(reference, x, y)(v2.vendors))
        bridge.step(*evaluate(market, x, y)(bridge.vendors))
        assert v2.lr == bridge.lr
    assert all(torch.equal(a, b) for a, b in zip(weights(reference), weights(market)))


# -- one name per algorithm, one meaning per decay: old spellings still load --


def test_old_algorithm_names_are_aliases():
    assert canonical_algorithm("adaptive-v2") == "adaptive"
    assert canonical_algorithm("torch-v2") == "v2"
    assert canonical_algorithm("v1") == "v1"


def test_the_old_decay_argument_keeps_its_meaning():
    market = problem()[0]
    assert V2(market, lr=0.1, decay=0.01).lr_decay == 0.01
    assert V1(market, lr=0.1, decay=0.02).decay == 0.02
    adaptive = AdaptiveV2(market, lr=0.1, decay=0.03)  # here it always meant the meta-rate's decay
    assert (adaptive.meta_lr_decay, adaptive.lr_decay, adaptive.decay) == (0.03, 0.0, 0.03)


def old_state(opt, **renamed):
    """opt's state as a version before the renames saved it."""
    state = opt.state_dict()
    for new, old in renamed.items():
        state[old] = state.pop(new)
    for key in ("lr_decay", "meta_lr_decay", "torch_optimizer"):
        state.pop(key, None)
    return state


def test_states_saved_under_the_old_names_resume_exactly():
    market, x, y = problem()
    adaptive = OPTIMIZERS["adaptive"](market, seed=2)
    run(adaptive, market, x, y, 2)
    state = old_state(adaptive, meta_lr_decay="decay")
    state["algorithm"] = "adaptive-v2"
    again = AdaptiveV2(problem()[0], lr=0.3, meta_lr=0.2)
    again.load_state_dict(state)
    assert (again.meta_lr_decay, again.lr_decay, again.meta_lr, again.lr) == (0.01, 0.0, adaptive.meta_lr, adaptive.lr)

    v1 = OPTIMIZERS["v1"](market, seed=2)
    run(v1, market, x, y, 2)
    again = V1(market, lr=0.3)
    again.load_state_dict(old_state(v1, lr_decay="decay"))
    assert (again.lr_decay, again.lr, again.steps) == (0.01, v1.lr, 2)

    bridge = sgd(market, seed=2)
    run(bridge, market, x, y, 2)
    state = old_state(bridge)
    state["algorithm"] = "torch-v2"
    again = sgd(market)
    again.load_state_dict(state)
    assert again.steps == 2 and again.seed == 2
