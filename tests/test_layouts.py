import pytest
import torch
from torch import nn

from helpers import path_reference
from marketplace import Market, MarketError, draw_vendors
from marketplace import layouts
from marketplace.models import beautiful_mnist, mlp

ROUTES = ["vmap", "grouped", "wide"]


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return [
        nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.InstanceNorm2d(3, affine=True), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten()),
        nn.Sequential(nn.Linear(16, 6), nn.Tanh(), nn.Linear(6, 5)),
    ]


def assert_every_path_matches(market, vendors, x, tol=1e-5):
    out = market.evaluate(x, vendors)
    assert out.products.shape[0] == market.num_paths == out.paths.shape[0]
    for product, path in zip(out.products, out.paths.tolist()):
        torch.testing.assert_close(product, path_reference(market, vendors, path, x), rtol=tol, atol=tol)
    return out


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("sampling", [[0, 0, 0], [0, 2, 3], [0, 3, 0], [0, 0, 5]])
def test_every_route_equals_the_path_by_path_reference(route, sampling):
    market = Market(tiny_cnn(), vendors=[3, 2, 2], sampling=sampling, formulation=route, precision="fp32")
    vendors = draw_vendors(seed=7, step=3, counts=market.vendor_counts, sigma=[0.3, 0.3, 0.3])
    assert_every_path_matches(market, vendors, torch.randn(4, 1, 10, 10))


@pytest.mark.parametrize("route", ["grouped", "wide"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_cnn_routes_give_the_vmap_products(route, channels_last):
    """The benchmark CNN, full and partial sampling: the same products and paths as vmap."""
    for sampling in ([0, 0, 0], [0, 2, 4]):
        torch.manual_seed(1)
        ref = Market(beautiful_mnist(3), vendors=[2, 3, 2], sampling=sampling, formulation="vmap", precision="fp32")
        fast = Market(beautiful_mnist(3), vendors=[2, 3, 2], sampling=sampling, formulation=route,
                      precision="fp32", channels_last=channels_last)
        fast.load_state_dict(ref.state_dict())
        vendors = draw_vendors(seed=1, step=0, counts=ref.vendor_counts, sigma=[0.05] * 3)
        x = torch.randn(3, 1, 28, 28)
        a, b = ref.evaluate(x, vendors), fast.evaluate(x, vendors)
        assert torch.equal(a.paths, b.paths)
        torch.testing.assert_close(b.products, a.products, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("route", ROUTES)
def test_mlp_routes_equal_the_reference(route):
    torch.manual_seed(2)
    market = Market(mlp([12, 7, 5, 3]), vendors=[3, 2, 3], sampling=[0, 3, 4], formulation=route)
    vendors = draw_vendors(seed=2, step=1, counts=market.vendor_counts, sigma=[0.2] * 3)
    assert_every_path_matches(market, vendors, torch.randn(5, 3, 4))


class Scale(nn.Module):
    """A layer no route has a rule for."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.s


@pytest.mark.parametrize("route", ["grouped", "wide"])
def test_an_unknown_layer_falls_back_to_vmap(route):
    torch.manual_seed(3)
    specs = [nn.Sequential(nn.Linear(4, 3), Scale()), nn.Sequential(nn.Linear(3, 2))]
    assert not layouts.expressible(specs[0]) and layouts.expressible(specs[1])
    market = Market(specs, vendors=[2, 3], formulation=route)
    vendors = draw_vendors(seed=3, step=0, counts=market.vendor_counts, sigma=[0.5, 0.5])
    assert_every_path_matches(market, vendors, torch.randn(3, 4))


def test_wide_reads_a_shared_input_without_copying_it():
    """The wide route's first layer is one convolution of M * O outputs over the unexpanded input."""
    spec = tiny_cnn()[0]
    params = {n: p.detach().expand(4, *p.shape).clone() for n, p in spec.named_parameters()}
    seen = []
    real = torch.nn.functional.conv2d

    def spy(inp, weight, *args, **kwargs):
        seen.append((tuple(inp.shape), tuple(weight.shape)))
        return real(inp, weight, *args, **kwargs)

    x = torch.randn(5, 1, 10, 10)
    try:
        torch.nn.functional.conv2d = spy
        layouts.grouped_spec(spec, params, x, shared=True, wide=True)
        layouts.grouped_spec(spec, params, x, shared=True, wide=False)
    finally:
        torch.nn.functional.conv2d = real
    assert seen[0] == ((5, 1, 10, 10), (12, 1, 3, 3))  # wide: the input once, 4 vendors x 3 outputs
    assert seen[1] == ((5, 4, 10, 10), (12, 1, 3, 3))  # grouped: the input copied per vendor


@pytest.mark.parametrize("route", ROUTES)
def test_a_head_that_pools_first_pools_once_for_all_its_vendors(route, monkeypatch):
    """Pooling commutes with copying the shared input: the wide route pools it once, then one wide linear layer."""
    torch.manual_seed(5)
    specs = [nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()),
             nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))]
    market = Market(specs, vendors=[2, 6], formulation=route, precision="fp32")
    vendors = draw_vendors(seed=5, step=0, counts=market.vendor_counts, sigma=[0.3, 0.3])
    pooled = []
    real = torch.nn.functional.adaptive_avg_pool2d
    monkeypatch.setattr(torch.nn.functional, "adaptive_avg_pool2d",
                        lambda x, size: pooled.append(tuple(x.shape)) or real(x, size))
    x = torch.randn(3, 1, 6, 6)
    market.evaluate(x, vendors)
    if route == "wide":
        assert pooled == [(2 * 3, 4, 6, 6)]  # both upstream products of 3 images, once, not once per head vendor
    monkeypatch.undo()
    assert_every_path_matches(market, vendors, x)


def test_bf16_routes_stay_close_to_fp32():
    torch.manual_seed(4)
    ref = Market(beautiful_mnist(3), vendors=2, precision="fp32", formulation="vmap")
    vendors = draw_vendors(seed=4, step=0, counts=ref.vendor_counts, sigma=[0.05] * 3)
    x = torch.randn(4, 1, 28, 28)
    expected = ref.evaluate(x, vendors).products
    for route in ("grouped", "wide"):
        fast = Market(beautiful_mnist(3), vendors=2, precision="bf16", formulation=route)
        fast.load_state_dict(ref.state_dict())
        got = fast.evaluate(x, vendors).products.float()
        assert float((got - expected).norm() / expected.norm()) < 3e-2


def test_auto_resolves_per_device_and_bad_names_are_refused():
    assert layouts.resolve("auto", torch.device("cpu")) == layouts.AUTO["cpu"]
    assert layouts.resolve("grouped", torch.device("cpu")) == "grouped"
    assert layouts.resolve("auto", torch.device("meta")) == "vmap"
    with pytest.raises(MarketError, match="formulation must be one of"):
        Market(tiny_cnn(), vendors=2, formulation="fast")


@pytest.mark.cuda
@pytest.mark.parametrize("route", ROUTES)
def test_cuda_routes_match_the_cpu_reference(route):
    torch.manual_seed(5)
    cpu = Market(beautiful_mnist(3), vendors=[3, 3, 3], sampling=[0, 4, 0], precision="fp32", formulation="vmap")
    vendors = draw_vendors(seed=5, step=0, counts=cpu.vendor_counts, sigma=[0.05] * 3)
    x = torch.randn(16, 1, 28, 28)
    expected = cpu.evaluate(x, vendors).products
    for precision, tol in (("fp32", 5e-3), ("bf16", 3e-2), ("fp16", 1e-2)):  # fp32 convolutions may use TF32
        gpu = Market(beautiful_mnist(3), vendors=[3, 3, 3], sampling=[0, 4, 0], precision=precision,
                     formulation=route).cuda()
        gpu.load_state_dict(cpu.state_dict())
        got = gpu.evaluate(x.cuda(), vendors).products.float().cpu()
        assert float((got - expected).norm() / expected.norm()) < tol, precision


def test_relu_in_place_never_touches_the_callers_input():
    """A spec that starts with ReLU on products it was handed must leave those products as they were."""
    spec = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(6, 2), nn.ReLU())
    params = {n: p.detach().expand(3, *p.shape).clone() for n, p in spec.named_parameters()}
    inp = torch.randn(3, 4, 6)
    before = inp.clone()
    for shared, x in ((False, inp), (True, inp[0])):
        layouts.grouped_spec(spec, params, x, shared=shared, wide=True)
    assert torch.equal(inp, before)


@pytest.mark.cuda
def test_short_cuda_training_run_learns(small_data):
    from marketplace.training import TrainConfig, train

    summary = train(TrainConfig(vendors=(4, 4, 4), batch=256, steps=100, eval_every=50, eval_samples=200,
                                device="cuda", data_dir=str(small_data)))
    assert summary["device"].startswith("cuda") and summary["steps"] == 100
    assert summary["test_accuracy"] > 35.0  # chance is 10%; 100 CPU steps of this market reach ~50%


def test_a_spec_without_parameters_runs_grouped_or_goes_to_vmap(monkeypatch):
    spec = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    x = torch.randn(3, 4, 2, 6, 6)  # [M, N, C, H, W]: vendor j's own input
    expected = torch.stack([spec(xi) for xi in x])
    torch.testing.assert_close(layouts.grouped_spec(spec, {}, x, shared=False), expected)
    with pytest.raises(layouts.UnsupportedLayout):
        layouts.grouped_spec(spec, {}, x[0], shared=True)
    monkeypatch.setattr(layouts, "vmap_spec", lambda spec, shared: "vmap")
    assert layouts.spec_function(spec, "wide", shared=True) == "vmap"  # no weights: vmap decides
    assert layouts.spec_function(spec, "wide", shared=False) != "vmap"


def test_a_replaced_layer_is_seen_though_the_layer_plan_is_kept():
    """grouped_spec keeps each spec's layer plan; replacing a module must not run the old one."""
    torch.manual_seed(0)
    spec = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    params = {n: p.detach().unsqueeze(0).repeat(2, *[1] * p.dim()) for n, p in spec.named_parameters()}
    x = torch.randn(5, 4)
    before = layouts.grouped_spec(spec, params, x, shared=True)
    assert torch.allclose(before[0], spec(x), atol=1e-6)
    spec[1] = nn.Tanh()  # same parameters, another layer
    after = layouts.grouped_spec(spec, params, x, shared=True)
    assert torch.allclose(after[0], spec(x), atol=1e-6) and not torch.allclose(after, before)
