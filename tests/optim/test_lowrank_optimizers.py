"""Low-rank vendors under every update rule: the update equals the dense one computed from materialised vendors."""

import copy

import pytest
import torch
from torch import nn

from marketplace import V1, V2, AdaptiveV2, Market, MarketplaceError, path_losses
from marketplace.functional import best_path, reconcile, standardized_attribution, unit_directions, vendor_attribution
from marketplace.optim import ForwardGradient, TorchMarketOptimizer


def problem(rank=2, seed=0):
    """Two specs, a conv and a linear one, on a small separable image problem."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 1, 6, 6, generator=g)
    y = (x.flatten(1) @ torch.randn(36, 3, generator=g)).argmax(1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        specs = [nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten()), nn.Sequential(nn.Linear(64, 3))]
    return Market(specs, vendors=[4, 3], rank=rank), x, y


def evaluate(market, x, y):
    return lambda v: (lambda out: (path_losses(out.products, y), out.paths))(market.evaluate(x, v))


def flat(market):
    return [market.flat_parameters(k).clone() for k in range(market.depth)]


def dense_reference(market, vendors, losses, paths):
    """R_k from the materialised deltas W + sigma c A B^T of every vendor: the dense rule's reconcile."""
    a = vendor_attribution(standardized_attribution(losses), paths, market.vendor_counts)
    return [reconcile(a[k], vendors.deltas(k, market.layouts[k].numel, market.device)) for k in range(market.depth)]


def test_v2_update_equals_the_dense_update_of_the_materialised_vendors():
    market, x, y = problem()
    opt = V2(market, lr=0.2, probe_scale=0.5, seed=3)
    before, vendors = flat(market), opt.vendors
    losses, paths = evaluate(market, x, y)(vendors)
    expected = unit_directions(dense_reference(market, vendors, losses, paths))
    opt.step(losses, paths)
    for k, (b, g) in enumerate(zip(before, expected)):
        torch.testing.assert_close(market.flat_parameters(k), b + 0.2 * g, rtol=1e-5, atol=1e-6)


def test_v1_applies_the_materialised_best_vendor():
    market, x, y = problem()
    opt = V1(market, lr=0.05, seed=1)
    before, vendors = flat(market), opt.vendors
    losses, paths = evaluate(market, x, y)(vendors)
    best = best_path(losses, paths).tolist()
    opt.step(losses, paths)
    for k, j in enumerate(best):
        delta = vendors.deltas(k, market.layouts[k].numel, market.device)[j]
        torch.testing.assert_close(market.flat_parameters(k), before[k] + delta, rtol=1e-5, atol=1e-6)


def test_torch_bridge_with_sgd_is_v2():
    market, x, y = problem()
    twin = copy.deepcopy(market)
    v2 = V2(market, lr=0.2, probe_scale=0.5, seed=3)
    sgd = torch.optim.SGD(twin.parameters(), lr=0.2)
    bridge = TorchMarketOptimizer(ForwardGradient(twin, sgd, probe_scale=0.5, seed=3), sgd)
    for _ in range(3):
        v2.step(*evaluate(market, x, y)(v2.vendors))
        bridge.step(*evaluate(twin, x, y)(bridge.vendors))
    for k in range(market.depth):
        torch.testing.assert_close(market.flat_parameters(k), twin.flat_parameters(k), rtol=1e-5, atol=1e-6)


class DenseOnly:
    """The same vendors without their low-rank form: the market then runs them densely."""

    def __init__(self, vendors):
        self.counts, self.sampling_seed, self.deltas = vendors.counts, vendors.sampling_seed, vendors.deltas


def test_adaptive_rate_market_matches_its_dense_evaluation():
    market, x, y = problem()
    twin = copy.deepcopy(market)
    a = AdaptiveV2(market, lr=0.2, probe_scale=0.5, meta_lr=0.5, seed=2)
    b = AdaptiveV2(twin, lr=0.2, probe_scale=0.5, meta_lr=0.5, seed=2)
    for _ in range(2):
        a.step(*evaluate(market, x, y)(a.vendors), evaluate(market, x, y))
        dense = lambda v: evaluate(twin, x, y)(DenseOnly(v))
        b.step(*dense(b.vendors), dense)
    assert a.lr == pytest.approx(b.lr)
    for k in range(market.depth):
        torch.testing.assert_close(market.flat_parameters(k), twin.flat_parameters(k), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["v1", "v2", "adaptive", "bridge"])
def test_rank_one_markets_learn(name):
    market, x, y = problem(rank=1)
    loss = lambda: float(nn.functional.cross_entropy(market(x), y).detach())
    before = loss()
    if name == "bridge":
        adam = torch.optim.Adam(market.parameters(), lr=0.02)
        opt = TorchMarketOptimizer(ForwardGradient(market, adam, probe_width=0.05, direction="raw", seed=0), adam)
    else:
        opt = {"v1": lambda: V1(market, lr=0.05), "v2": lambda: V2(market, lr=0.2, probe_scale=0.5),
               "adaptive": lambda: AdaptiveV2(market, lr=0.2, probe_scale=0.5, meta_lr=0.5)}[name]()
    closure = evaluate(market, x, y)
    for _ in range(40):
        opt.step(*closure(opt.vendors), closure)
    assert loss() < 0.9 * before


def test_state_records_the_rank_and_refuses_another():
    market, x, y = problem(rank=2)
    opt = V2(market, lr=0.2, probe_scale=0.5)
    opt.step(*evaluate(market, x, y)(opt.vendors))
    state = opt.state_dict()
    assert state["rank"] == 2
    same = V2(problem(rank=2)[0], lr=0.2, probe_scale=0.5)
    same.load_state_dict(state)
    assert same.steps == 1
    with pytest.raises(MarketplaceError, match="rank 2"):
        V2(problem(rank=1)[0], lr=0.2, probe_scale=0.5).load_state_dict(state)
    assert "rank" not in V2(problem(rank=0)[0], lr=0.2).state_dict()  # dense states are as before


# -- the replica axis: ranks swap seeds, each expands them as low-rank factors ----------------------


def replica_rank(rank, world, algorithm):
    from marketplace.distributed import ReplicaAxis, check_same_weights, init_from_env, shutdown

    comm = init_from_env(timeout=60.0)
    try:
        market, x, y = problem(rank=2)
        opt = V2(market, lr=0.2, probe_scale=0.5, seed=4) if algorithm == "v2" else V1(market, lr=0.05, seed=4)
        axis = ReplicaAxis(comm)
        for _ in range(2):
            axis.step(opt, evaluate(market, x, y), len(x))
        check_same_weights(market, comm, opt.steps)
        return flat(market)
    finally:
        shutdown()


def replica_reference(world, algorithm):
    """Every rank's paths with materialised low-rank deltas, summed naively."""
    from marketplace.optim.forward_gradient import draw_market_vendors

    market, x, y = problem(rank=2)
    widths = [0.2 * 0.5] * 2 if algorithm == "v2" else [0.05] * 2
    for step in range(2):
        runs = []
        for r in range(world):
            vendors = draw_market_vendors(market, 4, step, widths, stream=r)
            runs.append((vendors, *evaluate(market, x, y)(vendors)))
        deltas = lambda v, k: v.deltas(k, market.layouts[k].numel, market.device)
        if algorithm == "v2":
            total = [torch.zeros(lay.numel) for lay in market.layouts]
            for vendors, losses, paths in runs:
                for a, path in zip(standardized_attribution(losses), paths.tolist()):
                    for k, j in enumerate(path):
                        total[k] += a * deltas(vendors, k)[j]
            for k, g in enumerate(unit_directions(total)):
                market.add_(k, 0.2 * g)
        else:
            vendors, losses, paths = min(runs, key=lambda run: float(run[1].min()))
            for k, j in enumerate(paths[int(torch.argmin(losses))].tolist()):
                market.add_(k, deltas(vendors, k)[j])
    return flat(market)


@pytest.mark.parametrize("algorithm", ["v2", "v1"])
def test_replica_axis_with_low_rank_vendors_matches_the_naive_update(algorithm):
    from helpers import succeeded
    from marketplace.distributed import run_local

    results = succeeded(run_local(replica_rank, 2, algorithm, timeout=120))
    assert all(torch.equal(a, b) for a, b in zip(results[0], results[1]))
    for got, want in zip(results[0], replica_reference(2, algorithm)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
