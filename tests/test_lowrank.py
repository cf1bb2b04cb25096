"""Low-rank vendors: the batched forward against plain per-path references built from the same factors."""

import pytest
import torch
from torch import nn

from helpers import path_reference
from marketplace import Market, MarketError, draw_vendors
from marketplace.lowrank import LowRankVendors, draw_lowrank_vendors, entry_scale, split_draws
from marketplace.optim.adaptive import RateVendors
from marketplace.optim.forward_gradient import draw_market_vendors


def conv_linear_specs():
    torch.manual_seed(0)
    return [
        nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.InstanceNorm2d(3, affine=True), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten()),
        nn.Sequential(nn.Linear(64, 5)),
    ]


def assert_paths_match(market, vendors, x, tol=1e-5):
    out = market.evaluate(x, vendors)
    assert out.products.shape[0] == market.num_paths
    for product, path in zip(out.products, out.paths.tolist()):
        torch.testing.assert_close(product, path_reference(market, vendors, path, x), rtol=tol, atol=tol)
    return out


@pytest.mark.parametrize("rank", [1, 2, 4])
@pytest.mark.parametrize("sampling", [[0, 0, 0], [0, 2, 3]])
def test_lowrank_paths_equal_materialised_paths(rank, sampling):
    """Base weights + corrections == each path run plainly with W + sigma c A B^T built per vendor."""
    market = Market(conv_linear_specs(), vendors=[3, 2, 2], sampling=sampling, rank=rank)
    vendors = draw_market_vendors(market, 7, 3, [0.3, 0.3, 0.3])
    assert isinstance(vendors, LowRankVendors)
    assert_paths_match(market, vendors, torch.randn(4, 1, 10, 10))


def test_embedding_and_linear_specs():
    torch.manual_seed(0)
    specs = [nn.Sequential(nn.Embedding(11, 6), nn.Flatten()), nn.Sequential(nn.Linear(18, 8), nn.Tanh(),
                                                                             nn.Linear(8, 4))]
    market = Market(specs, vendors=[3, 3], rank=2)
    assert set(market.lowrank_plans[0].ranks) == {"0.weight"}
    assert set(market.lowrank_plans[1].ranks) == {"0.weight", "2.weight"}
    vendors = draw_market_vendors(market, 1, 0, [0.2, 0.2])
    assert_paths_match(market, vendors, torch.randint(0, 11, (5, 3)))


def test_rank_is_clamped_and_other_parameters_stay_dense():
    market = Market(conv_linear_specs(), vendors=2, rank=64)
    first, _, last = market.lowrank_plans
    assert first.ranks == {"0.weight": 3}  # min(3 out channels, 1 * 3 * 3)
    assert last.ranks == {"0.weight": 5}
    # drawn: 3 * (3 + 9) factors + 3 bias + 3 + 3 norm values, not the dense 27 + 9
    assert first.draws == 3 * (3 + 9) + 9
    assert market.layouts[2].numel == 64 * 5 + 5 and last.draws == 5 * (64 + 5) + 5


def test_factors_are_small_and_scaled_like_dense_vendors():
    """Per vendor only r (out + in) numbers; each entry of a delta has a dense delta's variance sigma^2 / 3."""
    market = Market([nn.Linear(40, 30)], vendors=400, rank=2)
    vendors = draw_market_vendors(market, 0, 0, [0.5])
    units = vendors.units(0, torch.device("cpu"))
    assert units.shape == (400, 2 * (30 + 40) + 30)
    deltas = vendors.deltas(0, market.layouts[0].numel, torch.device("cpu"))[1:]
    weight_var = deltas[:, 30:].var().item()  # layout: bias first (sorted names), then weight
    assert abs(weight_var / (0.25 / 3) - 1) < 0.05
    assert entry_scale(1) == pytest.approx(3 ** 0.5)


def test_same_seed_same_factors_and_regenerated_equals_cached():
    market = Market(conv_linear_specs(), vendors=[3, 2, 2], rank=2)
    plans = market.lowrank_plans
    a = draw_lowrank_vendors(5, 2, market.vendor_counts, [0.1] * 3, plans)
    b = draw_lowrank_vendors(5, 2, market.vendor_counts, [0.1] * 3, plans, cache=False)
    c = draw_lowrank_vendors(5, 3, market.vendor_counts, [0.1] * 3, plans)
    cpu = torch.device("cpu")
    for k in range(3):
        assert torch.equal(a.units(k, cpu), b.units(k, cpu))
        assert torch.equal(a.units(k, cpu), a.units(k, cpu))
        assert not torch.equal(a.units(k, cpu)[1:], c.units(k, cpu)[1:])
        assert not a.units(k, cpu)[0].any()  # the leader: seed 0, no perturbation
    # the seeds are the dense vendors' seeds: what crosses a wire is unchanged
    dense = draw_vendors(5, 2, market.vendor_counts, [0.1] * 3)
    assert all(torch.equal(s, t) for s, t in zip(a.seeds, dense.seeds))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_factors_are_bit_identical_on_cuda():
    market = Market(conv_linear_specs(), vendors=[3, 2, 2], rank=2)
    vendors = draw_market_vendors(market, 5, 2, [0.1] * 3)
    for k in range(3):
        assert torch.equal(vendors.units(k, torch.device("cpu")), vendors.units(k, torch.device("cuda")).cpu())


def test_antithetic_pairs_mirror_the_whole_delta():
    market = Market(conv_linear_specs(), vendors=[5, 2, 2], rank=2)
    vendors = draw_lowrank_vendors(0, 0, market.vendor_counts, [0.1] * 3, market.lowrank_plans, antithetic=True)
    deltas = vendors.deltas(0, market.layouts[0].numel, torch.device("cpu"))
    torch.testing.assert_close(deltas[2], -deltas[1])
    torch.testing.assert_close(deltas[4], -deltas[3])


def test_one_vendor_delta_and_reconcile_match_the_materialised_ones():
    from marketplace.functional import reconcile

    market = Market(conv_linear_specs(), vendors=[4, 3, 3], rank=2)
    vendors = draw_market_vendors(market, 3, 1, [0.2] * 3)
    cpu = torch.device("cpu")
    for k in range(3):
        numel = market.layouts[k].numel
        deltas = vendors.deltas(k, numel, cpu)
        a = torch.randn(len(deltas))
        torch.testing.assert_close(vendors.reconcile(k, a, numel, cpu), reconcile(a, deltas), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(vendors.delta(k, 2, numel, cpu), deltas[2])


def test_rate_vendors_along_a_direction_match_the_dense_route():
    """AdaptiveV2's second market in a low-rank market: x G once per layer, scaled per vendor."""
    market = Market(conv_linear_specs(), vendors=[3, 2, 2], rank=1)
    directions = [torch.randn(lay.numel) for lay in market.layouts]
    steps = [torch.tensor([0.0, 0.1, -0.2]), torch.tensor([0.0, 0.3]), torch.tensor([0.0, 0.05])]
    rate = RateVendors(directions, steps, sampling_seed=9)
    assert_paths_match(market, rate, torch.randn(3, 1, 10, 10))  # the reference reads rate.deltas


def test_rank_zero_is_the_dense_market():
    x = torch.randn(2, 1, 10, 10)
    dense, zero = Market(conv_linear_specs(), vendors=[3, 2, 2]), Market(conv_linear_specs(), vendors=[3, 2, 2], rank=0)
    assert zero.rank == 0 and zero.lowrank_plans is None
    vendors = draw_market_vendors(zero, 1, 0, [0.1] * 3)
    assert type(vendors).__name__ == "SeededVendors"
    assert torch.equal(dense.evaluate(x, vendors).products, zero.evaluate(x, vendors).products)


def test_a_low_rank_market_given_dense_vendors_runs_them_densely():
    market = Market(conv_linear_specs(), vendors=[3, 2, 2], rank=2)
    assert_paths_match(market, draw_vendors(0, 0, market.vendor_counts, [0.1] * 3), torch.randn(2, 1, 10, 10))


class ReadsWeightItself(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return x @ self.lin.weight.T  # the layer's forward never runs: a correction hook could not fire


def test_a_weight_read_outside_its_layer_is_refused():
    market = Market([ReadsWeightItself()], vendors=2, rank=1)
    with pytest.raises(MarketError, match="not read through its layer"):
        market.evaluate(torch.randn(2, 4), draw_market_vendors(market, 0, 0, [0.1]))


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_ranks_are_refused(bad):
    with pytest.raises(MarketError, match="rank"):
        Market(conv_linear_specs(), vendors=2, rank=bad)


def test_split_draws_scale():
    """a carries sigma * sqrt(3 / r); b is the raw uniform draw."""
    market = Market([nn.Linear(4, 3, bias=False)], vendors=2, rank=2)
    plan = market.lowrank_plans[0]
    units = torch.ones(2, plan.draws)
    a, b = split_draws(units, plan, 0.5).factors["weight"]
    assert torch.allclose(a, torch.full((2, 3, 2), 0.5 * (1.5 ** 0.5))) and torch.equal(b, torch.ones(2, 4, 2))


def test_train_rank_one_resumes_exactly(monkeypatch, capsys, small_data, tmp_path):
    """`train --rank 1`: 3 steps straight == 2 steps, saved, resumed to 3; the checkpoint records the rank."""
    from helpers import assert_same_weights, assert_user_error, last_json, run_cli
    from marketplace.training import load_checkpoint

    base = ["train", "--rank", "1", "--vendors", "2,2,2", "--cheap-vendors", "0", "--batch", "8",
            "--eval-samples", "50", "--device", "cpu", "--quiet", "--json", "--data-dir", small_data]
    straight, parts = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    code, out, err = run_cli(monkeypatch, capsys, *base, "--steps", "3", "--checkpoint", straight)
    assert code == 0, err
    assert last_json(out)["steps"] == 3
    for steps in ("2", "3"):
        code, out, err = run_cli(monkeypatch, capsys, *base, "--steps", steps, "--checkpoint", parts, "--resume")
        assert code == 0, err
    a, b = load_checkpoint(straight), load_checkpoint(parts)
    assert a.meta["config"]["rank"] == 1 and a.optimizer["rank"] == 1 and b.optimizer["steps"] == 3
    assert_same_weights(a.model, b.model)
    code, out, err = run_cli(monkeypatch, capsys, *[o if o != "1" else "2" for o in base], "--steps", "4",
                             "--checkpoint", parts, "--resume")
    assert_user_error(code, out, err, "rank=1, not 2")


def test_bf16_autocast_stays_close_to_fp32():
    """Corrections run under the market's autocast too (bf16 on CUDA by default)."""
    x = torch.randn(3, 1, 10, 10)
    fp32 = Market(conv_linear_specs(), vendors=[3, 2, 2], rank=2, precision="fp32")
    bf16 = Market(conv_linear_specs(), vendors=[3, 2, 2], rank=2, precision="bf16")
    vendors = draw_market_vendors(fp32, 0, 0, [0.2] * 3)
    torch.testing.assert_close(bf16.evaluate(x, vendors).products.float(), fp32.evaluate(x, vendors).products,
                               rtol=0.05, atol=0.05)


@pytest.mark.parametrize("materialise", [0.0, float("inf")])  # never build vendor weights; always
@pytest.mark.parametrize("shared", [True, False])
def test_grouped_route_equals_the_vmap_route(shared, materialise, monkeypatch):
    """The grouped low-rank route (corrections accumulated, or small vendors built) gives vmap's result."""
    from marketplace import lowrank_layers
    from marketplace.lowrank_layers import grouped_spec_forward, spec_forward

    monkeypatch.setattr(lowrank_layers, "MATERIALISE_BELOW", materialise)
    specs = conv_linear_specs() + [nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))]
    market = Market(specs, vendors=[3, 2, 2, 4], rank=2)
    vendors = draw_market_vendors(market, 5, 1, [0.3] * 4)
    inputs = [torch.randn(4, 1, 10, 10), torch.randn(4, 3, 4, 4), torch.randn(4, 64), torch.randn(4, 5)]
    for k, (spec, x) in enumerate(zip(market.specs, inputs)):
        parts = vendors.lowrank_parts(k, market.lowrank_plans[k], x.device)
        m = market.vendor_counts[k]
        inp = x if shared else torch.randn(m, *x.shape)
        base = dict(spec.named_parameters())
        with torch.no_grad():
            grouped = grouped_spec_forward(spec, base, parts, inp, shared)
            plain = spec_forward(spec, base, parts, inp, shared, grouped=False)
        assert grouped.shape == plain.shape == (m, *plain.shape[1:])
        torch.testing.assert_close(grouped, plain, rtol=1e-5, atol=1e-5)
