"""Any reasonable module as a spec: the layer matrix against the path-by-path reference, random
layers, parameter-free specs, buffers and tied weights."""

import pytest
import torch
from torch import nn

from helpers import path_reference
from marketplace import V1, V2, AdaptiveV2, Market, MarketError, draw_vendors, path_losses


class SelfAttention(nn.Module):
    """MultiheadAttention as a residual block over [B, T, E]."""

    def __init__(self, dim, heads, dropout=0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        h = self.norm(x)
        return x + self.attn(h, h, h, need_weights=False)[0]


class Residual(nn.Module):
    """A pre-activation residual block: GroupNorm, GELU, Conv, plus the input."""

    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(2, c), nn.GELU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class Scaled(nn.Module):
    """A constant (non-parameter) buffer, as a positional table or a mask would be."""

    def __init__(self, n):
        super().__init__()
        self.linear = nn.Linear(n, n)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, n))

    def forward(self, x):
        return self.linear(x) * self.scale


def head(features, classes=5):
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes))


# name -> (specs factory, input factory); every case has 3 specs so partial sampling applies
LAYERS = {
    "conv1d": (lambda: [nn.Sequential(nn.Conv1d(2, 4, 3), nn.SiLU()), nn.Sequential(nn.Conv1d(4, 4, 3), nn.GELU()),
                        head(4 * 6)], lambda: torch.randn(3, 2, 10)),
    "conv2d+pool": (lambda: [nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2)),
                             nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(2)), head(4 * 2 * 2)],
                    lambda: torch.randn(3, 1, 10, 10)),
    "linear": (lambda: [nn.Sequential(nn.Linear(6, 8), nn.GELU()), nn.Sequential(nn.Linear(8, 8), nn.SiLU()),
                        nn.Linear(8, 5)], lambda: torch.randn(3, 6)),
    "embedding": (lambda: [nn.Embedding(20, 6), nn.Sequential(nn.Linear(6, 6), nn.Tanh()), head(4 * 6)],
                  lambda: torch.randint(0, 20, (3, 4))),
    "layernorm": (lambda: [nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8)), nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)),
                           nn.Linear(8, 5)], lambda: torch.randn(3, 6)),
    "groupnorm": (lambda: [nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4)), Residual(4), head(4 * 6 * 6)],
                  lambda: torch.randn(3, 1, 8, 8)),
    "instancenorm": (lambda: [nn.Sequential(nn.Conv2d(1, 4, 3), nn.InstanceNorm2d(4, affine=True)),
                              nn.Sequential(nn.Conv2d(4, 4, 3), nn.InstanceNorm2d(4)), head(4 * 4 * 4)],
                     lambda: torch.randn(3, 1, 8, 8)),
    "rmsnorm": (lambda: [nn.Sequential(nn.Linear(6, 8), nn.RMSNorm(8)), nn.Sequential(nn.Linear(8, 8), nn.RMSNorm(8)),
                         nn.Linear(8, 5)], lambda: torch.randn(3, 6)),
    "dropout": (lambda: [nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.5)),
                         nn.Sequential(nn.Unflatten(1, (1, 8)), nn.Conv1d(1, 2, 3), nn.Dropout1d(0.3), nn.Flatten()),
                         nn.Linear(12, 5)],
                lambda: torch.randn(3, 6)),
    "attention": (lambda: [nn.Linear(6, 8), SelfAttention(8, 2, dropout=0.1), head(4 * 8)],
                  lambda: torch.randn(3, 4, 6)),
    "transformer": (lambda: [nn.Linear(6, 8),
                             nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1, batch_first=True),
                             head(4 * 8)], lambda: torch.randn(3, 4, 6)),
    "residual": (lambda: [nn.Conv2d(1, 4, 3, padding=1), Residual(4), nn.Sequential(nn.AdaptiveAvgPool2d(1), head(4))],
                 lambda: torch.randn(3, 1, 6, 6)),
    "constant buffer": (lambda: [Scaled(6), nn.Sequential(nn.ReLU(), Scaled(6)), nn.Linear(6, 5)],
                        lambda: torch.randn(3, 6)),
    "parameter-free spec": (lambda: [nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU()), nn.Sequential(nn.MaxPool2d(2), nn.Flatten()),
                                     nn.Linear(3 * 3 * 3, 5)], lambda: torch.randn(3, 1, 8, 8)),
}


@pytest.mark.parametrize("sampling", ["full", "partial"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_layer_as_a_spec_batched_equals_looped(layer, sampling):
    make_specs, make_input = LAYERS[layer]
    torch.manual_seed(0)
    specs = make_specs()
    counts = [m if any(True for _ in s.parameters()) else 1 for m, s in zip([3, 2, 2], specs)]
    market = Market(specs, vendors=counts, sampling=[0, 2, 2] if sampling == "partial" else 0)
    market.eval()  # random layers off: the reference has no masks to match
    vendors = draw_vendors(seed=4, step=1, counts=market.vendor_counts, sigma=[0.2] * 3)
    x = make_input()
    out = market.evaluate(x, vendors)
    assert out.products.shape[:2] == (market.num_paths, 3)
    for product, path in zip(out.products, out.paths.tolist()):
        torch.testing.assert_close(product, path_reference(market, vendors, path, x), rtol=1e-4, atol=1e-5)
    for i in (out.paths == 0).all(dim=1).nonzero().flatten().tolist():  # the leader path, where sampled
        torch.testing.assert_close(out.products[i], market(x), rtol=1e-4, atol=1e-5)


# -- random layers ---------------------------------------------------------------------


def dropout_market():
    torch.manual_seed(0)
    return Market([nn.Sequential(nn.Linear(6, 32), nn.Dropout(0.5)), nn.Sequential(nn.Dropout(0.5), nn.Linear(32, 4))],
                  vendors=[4, 3])


def test_dropout_masks_differ_across_vendors_and_repeat_with_the_same_vendors():
    market = dropout_market()
    same_weights = draw_vendors(0, 0, market.vendor_counts, [0.0, 0.0])  # every vendor = the base weights
    x = torch.randn(5, 6)
    state = torch.get_rng_state()
    products = market.evaluate(x, same_weights).products  # [12, 5, 4]
    assert torch.equal(torch.get_rng_state(), state), "the caller's RNG was touched"
    distinct = {tuple(p.flatten().tolist()) for p in products}
    assert len(distinct) == len(products)  # only the masks tell the 12 products apart
    assert not torch.allclose(products[0, 0], products[0, 1])  # and the examples within one product
    assert torch.equal(products, market.evaluate(x, same_weights).products)  # seeded by the vendors
    other = draw_vendors(0, 1, market.vendor_counts, [0.0, 0.0])
    assert not torch.equal(products, market.evaluate(x, other).products)


def test_eval_mode_and_base_weight_inference_are_deterministic():
    market = dropout_market()
    vendors = draw_vendors(0, 0, market.vendor_counts, [0.0, 0.0])
    x = torch.randn(5, 6)
    assert market.training
    first = market(x)
    torch.testing.assert_close(market(x), first)  # inference: dropout off even in training mode
    assert market.training and all(m.training for m in market.modules())  # the flags are restored
    market.eval()
    products = market.evaluate(x, vendors).products
    torch.testing.assert_close(products, first.expand_as(products))


def test_a_custom_random_op_draws_per_vendor():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):
            return self.linear(x) + (torch.randn_like(x) if self.training else 0)

    market = Market([Noisy()], vendors=3)
    products = market.evaluate(torch.zeros(2, 4), draw_vendors(0, 0, [3], [0.0])).products
    assert not torch.allclose(products[1], products[2])


def test_v2_trains_a_market_with_dropout():
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 4, (64,))
    market = dropout_market()
    optimizer = V2(market, lr=0.3, probe_scale=0.1, seed=0)
    before = float(path_losses(market(x).detach()[None], y)[0])
    for _ in range(30):
        out = market.evaluate(x, optimizer.vendors)
        optimizer.step(path_losses(out.products, y), out.paths)
    assert float(path_losses(market(x).detach()[None], y)[0]) < before


# -- parameter-free specs ------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", [V1, V2, AdaptiveV2])
def test_parameter_free_spec_has_one_implicit_vendor(optimizer):
    torch.manual_seed(0)
    market = Market([nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)], vendors=4)
    assert market.vendor_counts == (4, 1, 4) and market.num_paths == 16
    opt = optimizer(market, lr=0.1, seed=0)
    x, y = torch.randn(2, 1, 6, 6), torch.tensor([0, 2])
    out = market.evaluate(x, opt.vendors)
    assert out.products.shape == (16, 2, 3) and set(out.paths[:, 1].tolist()) == {0}
    def closure(vendors):  # the adaptive rate's second forward pass
        again = market.evaluate(x, vendors)
        return path_losses(again.products, y), again.paths

    opt.step(path_losses(out.products, y), out.paths, closure=closure)  # nothing to move in spec 1
    assert opt.steps == 1


def test_parameter_free_spec_with_several_vendors_is_refused():
    with pytest.raises(MarketError, match=r"spec 1 \(Flatten\) has no parameters.*give it 1 vendor, not 4"):
        Market([nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(32, 3)], vendors=[4, 4, 4])


# -- buffers and tied weights ----------------------------------------------------------------


class Counter(nn.Module):
    """Counts its calls in a buffer: state that changes in forward."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return self.linear(x)


class MovingMean(nn.Module):
    """A running mean of its input, written under vmap: the write itself fails there."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.register_buffer("mean", torch.zeros(4))

    def forward(self, x):
        self.mean.mul_(0.9).add_(0.1 * x.mean(0))
        return self.linear(x)


@pytest.mark.parametrize("module", [Counter, MovingMean])
def test_a_buffer_written_in_forward_is_refused_naming_the_module(module):
    market = Market([nn.Linear(4, 4), nn.Sequential(nn.ReLU(), module())], vendors=2)
    name = module.__name__
    with pytest.raises(MarketError, match=rf"spec 1 \(1\) is a {name} that changes its buffer"):
        market.evaluate(torch.randn(3, 4), draw_vendors(0, 0, [2, 2], [0.1, 0.1]))
    with pytest.raises(MarketError, match=rf"spec 1 \(1\) is a {name} that changes its buffer"):
        market(torch.randn(3, 4))


@pytest.mark.parametrize("layer,what", [
    (nn.InstanceNorm2d(2, track_running_stats=True), "InstanceNorm2d that keeps running statistics"),
    (nn.BatchNorm1d(2), "BatchNorm1d"),
    (nn.LazyBatchNorm2d(), "LazyBatchNorm2d"),
])
def test_running_statistics_are_refused_at_construction(layer, what):
    with pytest.raises(MarketError, match=rf"spec 0 \(1\) is a {what}"):
        Market([nn.Sequential(nn.Conv2d(1, 2, 3), layer), nn.Flatten()], vendors=[2, 1])


def test_weights_tied_across_specs_are_refused():
    shared = nn.Linear(4, 4)
    with pytest.raises(MarketError, match=r"spec 0 \(weight\) and spec 1 \(1.weight\) share one parameter"):
        Market([shared, nn.Sequential(nn.ReLU(), shared)], vendors=2)


def test_weights_tied_within_one_spec_are_one_parameter():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    market = Market([nn.Sequential(a, nn.Tanh(), b)], vendors=3)
    assert market.layouts[0].numel == 24
    market.eval()
    vendors = draw_vendors(1, 0, [3], [0.2])
    x = torch.randn(2, 4)
    out = market.evaluate(x, vendors)
    for product, path in zip(out.products, out.paths.tolist()):
        torch.testing.assert_close(product, path_reference(market, vendors, path, x))
    assert a.weight is b.weight and type(a.weight) is nn.Parameter  # the module is intact afterwards


def test_one_module_used_twice_in_a_spec_is_refused():
    shared = nn.Linear(4, 4)
    with pytest.raises(MarketError, match=r"spec 0 uses one Linear twice \(0 and 2\)"):
        Market([nn.Sequential(shared, nn.Tanh(), shared)], vendors=3)
