import itertools

import pytest
import torch
from torch import nn

from helpers import path_reference
from marketplace import Market, MarketError, draw_vendors
from marketplace.models import beautiful_mnist, mlp


def tiny_cnn():
    torch.manual_seed(0)
    return [
        nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.InstanceNorm2d(3, affine=True), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()),
        nn.Sequential(nn.Linear(16, 5)),
    ]


@pytest.mark.parametrize("sampling", [[0, 0, 0], [0, 2, 3], [0, 3, 0], [0, 0, 5]])
def test_batched_paths_equal_looped_paths(sampling):
    market = Market(tiny_cnn(), vendors=[3, 2, 2], sampling=sampling)
    vendors = draw_vendors(seed=7, step=3, counts=market.vendor_counts, sigma=[0.3, 0.3, 0.3])
    x = torch.randn(4, 1, 10, 10)
    out = market.evaluate(x, vendors)
    assert out.products.shape == (market.num_paths, 4, 5)
    assert out.paths.shape == (market.num_paths, 3)
    for product, path in zip(out.products, out.paths.tolist()):
        torch.testing.assert_close(product, path_reference(market, vendors, path, x), rtol=1e-5, atol=1e-5)


def test_full_sampling_covers_every_path_once():
    market = Market(tiny_cnn(), vendors=[3, 2, 2])
    out = market.evaluate(torch.randn(2, 1, 10, 10), draw_vendors(0, 0, market.vendor_counts, [0.1] * 3))
    assert sorted(map(tuple, out.paths.tolist())) == list(itertools.product(range(3), range(2), range(2)))
    assert out.paths[0].tolist() == [0, 0, 0]  # the leader path comes first


def test_partial_sampling_draws_distinct_upstream_per_vendor():
    market = Market(tiny_cnn(), vendors=[3, 2, 2], sampling=[0, 2, 3])
    vendors = draw_vendors(1, 0, market.vendor_counts, [0.1] * 3)
    out = market.evaluate(torch.randn(2, 1, 10, 10), vendors)
    assert market.num_products() == [3, 4, 6]
    for j in range(2):  # spec 2: vendor j consumed 3 distinct spec-1 products
        upstream = out.paths[out.paths[:, 2] == j][:, :2]
        assert len(upstream) == 3 and len(set(map(tuple, upstream.tolist()))) == 3
    # the choice is a function of the vendors' sampling seed
    assert torch.equal(out.paths, market.evaluate(torch.randn(2, 1, 10, 10), vendors).paths)


def test_leader_path_is_the_base_model():
    market = Market(beautiful_mnist(3), vendors=[2, 2, 2])
    x = torch.randn(3, 1, 28, 28)
    out = market.evaluate(x, draw_vendors(0, 0, market.vendor_counts, [0.5] * 3))
    torch.testing.assert_close(out.products[0], market(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out.products[1], out.products[0])


def test_beautiful_mnist_splits_compute_the_same_function():
    torch.manual_seed(1)
    three = beautiful_mnist(3)
    torch.manual_seed(1)
    one = beautiful_mnist(1)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(Market(three, 1)(x), Market(one, 1)(x))
    assert sum(p.numel() for s in three for p in s.parameters()) == 87_850


def test_user_mlp_two_specs():
    market = Market(mlp([12, 8, 3]), vendors=[4, 3])
    out = market.evaluate(torch.randn(5, 12), draw_vendors(0, 0, market.vendor_counts, [0.1, 0.1]))
    assert out.products.shape == (12, 5, 3)


@pytest.mark.parametrize("bad,message", [
    (dict(vendors=[4, 4]), "vendors has 2 entries but the market has 3 specs"),
    (dict(vendors=[4, 0, 4]), "at least 1 vendor"),
    (dict(vendors=[2, 2, 2], sampling=[0, 5, 0]), "spec 1 samples 5 upstream products but spec 0 makes only 2"),
    (dict(vendors=[2, 2, 2], sampling=[1, 0, 0]), "spec 0 reads the input"),
    (dict(vendors=[2, 2, 2], sampling=[0, -1, 0]), ">= 0"),
])
def test_bad_markets_are_refused(bad, message):
    with pytest.raises(MarketError, match=message):
        Market(tiny_cnn(), **bad)


def test_batchnorm_is_refused_with_the_reason():
    specs = [nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), nn.Flatten()]
    with pytest.raises(MarketError, match=r"spec 0 \(1\) is a BatchNorm2d.*InstanceNorm"):
        Market(specs, vendors=2)


def test_shape_mismatch_names_the_spec():
    specs = [nn.Linear(6, 4), nn.Linear(5, 3)]  # spec 1 expects 5 features, gets 4
    market = Market(specs, vendors=2)
    with pytest.raises(MarketError, match=r"spec 1 \(Linear\) cannot take its input of shape \[4, 4\]"):
        market.evaluate(torch.randn(2, 6), draw_vendors(0, 0, [2, 2], [0.1, 0.1]))
    with pytest.raises(MarketError, match="spec 0"):
        market(torch.randn(2, 7))


def test_vendors_must_fit_the_market():
    market = Market(tiny_cnn(), vendors=[2, 2, 2])
    with pytest.raises(MarketError, match="do not match the market"):
        market.evaluate(torch.randn(1, 1, 10, 10), draw_vendors(0, 0, [2, 3, 2], [0.1] * 3))


def test_regenerated_deltas_equal_cached_ones():
    market = Market(tiny_cnn(), vendors=[2, 3, 2])
    x = torch.randn(2, 1, 10, 10)
    cached = draw_vendors(5, 1, market.vendor_counts, [0.2] * 3, cache=True)
    fresh = draw_vendors(5, 1, market.vendor_counts, [0.2] * 3, cache=False)
    assert torch.equal(market.evaluate(x, cached).products, market.evaluate(x, fresh).products)
    assert not fresh._units and cached._units


@pytest.mark.parametrize("options,tol", [
    (dict(channels_last=True), 1e-5),
    (dict(precision="bf16"), 5e-2),
])
def test_speed_options_stay_close_to_the_fp32_reference(options, tol):
    torch.manual_seed(0)
    specs = beautiful_mnist(3)
    reference = Market(specs, vendors=[2, 3, 2], precision="fp32", channels_last=False)
    fast = Market(specs, vendors=[2, 3, 2], **options)  # the same modules: same base weights
    vendors = draw_vendors(3, 0, reference.vendor_counts, [0.05] * 3)
    x = torch.randn(4, 1, 28, 28)
    ref, out = reference.evaluate(x, vendors), fast.evaluate(x, vendors)
    assert torch.equal(ref.paths, out.paths)
    error = (out.products.float() - ref.products).norm() / ref.products.norm()
    assert float(error) < tol


@pytest.mark.cuda
def test_cuda_bf16_market_matches_cpu_fp32():
    torch.manual_seed(0)
    cpu = Market(beautiful_mnist(3), vendors=[4, 4, 4], precision="fp32")
    gpu = Market(beautiful_mnist(3), vendors=[4, 4, 4]).cuda()
    gpu.load_state_dict(cpu.state_dict())
    vendors = draw_vendors(3, 0, cpu.vendor_counts, [0.01] * 3)
    x = torch.randn(8, 1, 28, 28)
    ref, out = cpu.evaluate(x, vendors), gpu.evaluate(x.cuda(), vendors)
    error = (out.products.float().cpu() - ref.products).norm() / ref.products.norm()
    assert float(error) < 5e-2


def test_unknown_precision_is_refused():
    with pytest.raises(MarketError, match="precision must be one of"):
        Market(tiny_cnn(), vendors=2, precision="fp8")


def test_frozen_parameters_are_read_but_never_perturbed_or_moved():
    """requires_grad=False freezes a parameter as torch.optim does: every vendor reads it as it is."""
    from helpers import path_reference
    from marketplace import V2, path_losses
    from marketplace.optim.forward_gradient import draw_market_vendors

    torch.manual_seed(0)
    specs = [nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.InstanceNorm2d(3, affine=True), nn.Flatten()),
             nn.Sequential(nn.Linear(192, 4))]
    specs[0][0].weight.requires_grad_(False)
    frozen = specs[0][0].weight.detach().clone()
    for rank in (0, 1):
        market = Market(specs, vendors=[3, 2], rank=rank)
        assert "0.weight" not in market.layouts[0].names and market.frozen_parameters == 27
        assert "frozen=27 parameters" in repr(market)
        vendors = draw_market_vendors(market, 3, 0, [0.3, 0.3])
        x, y = torch.randn(5, 1, 10, 10), torch.randint(0, 4, (5,))
        out = market.evaluate(x, vendors)
        for product, path in zip(out.products, out.paths.tolist()):
            torch.testing.assert_close(product, path_reference(market, vendors, path, x), rtol=1e-5, atol=1e-5)
        from marketplace.continual.serving import serve, serve_reference

        served = serve(market, vendors, x, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(served.logits, serve_reference(market, vendors, x, served.paths),
                                   rtol=1e-5, atol=1e-5)
        opt = V2(market, lr=0.1, probe_scale=0.1)
        before = specs[0][0].bias.detach().clone()
        out = market.evaluate(x, opt.vendors)
        opt.step(path_losses(out.products, y), out.paths)
        assert torch.equal(specs[0][0].weight, frozen) and not torch.equal(specs[0][0].bias, before)
    for p in specs[1].parameters():
        p.requires_grad_(False)
    assert Market(specs, vendors=3).vendor_counts == (3, 1)  # a frozen spec: one implicit vendor
    for p in specs[0].parameters():
        p.requires_grad_(False)
    with pytest.raises(MarketError, match="no parameter to perturb"):
        Market(specs, vendors=1)
