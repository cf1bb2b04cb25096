import pytest
import torch
from torch import nn

from marketplace import Market, MarketError, draw_vendors
from marketplace.models import mlp
from marketplace.continual.serving import balanced_paths, random_paths, serve, serve_reference


def close(a, b, tol=1e-5):
    """torch.allclose with the largest difference in the message (cheaper to import than torch.testing)."""
    assert a.shape == b.shape and torch.allclose(a, b, rtol=tol, atol=tol), (a - b).abs().max()


def tiny_cnn(classes=5):
    """The beautiful-MNIST layer kinds at toy size: conv, relu, instance norm, max pool, flatten, linear."""
    torch.manual_seed(0)
    return [
        nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.InstanceNorm2d(3, affine=True), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten()),
        nn.Sequential(nn.Linear(64, classes)),
    ]


class Scale(nn.Module):
    """A layer the grouped layout has no rule for: the spec falls back to vmap."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n))

    def forward(self, x):
        return x * self.weight


def market_and_vendors(specs, counts, sigma=0.3, step=3):
    market = Market(specs, counts)
    return market, draw_vendors(seed=7, step=step, counts=market.vendor_counts, sigma=[sigma] * len(counts))


@pytest.mark.parametrize("batch", [1, 5, 23])
@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("grouped", [True, False])
def test_batched_random_paths_equal_each_example_alone(batch, balanced, grouped):
    market, vendors = market_and_vendors(tiny_cnn(), [3, 2, 4])
    x = torch.randn(batch, 1, 10, 10)
    out = serve(market, vendors, x, generator=torch.Generator().manual_seed(batch), balanced=balanced,
                grouped=grouped)
    assert out.logits.shape == (batch, 5) and out.paths.shape == (batch, 3)
    close(out.logits, serve_reference(market, vendors, x, out.paths))


@pytest.mark.parametrize("grouped", [True, False])
def test_vendors_no_example_drew_are_left_out_and_the_rest_keep_their_weights(grouped):
    market, vendors = market_and_vendors(tiny_cnn(), [3, 2, 4])
    x = torch.randn(3, 1, 10, 10)
    paths = torch.tensor([[2, 0, 3], [2, 1, 3], [0, 1, 1]])  # spec 0: vendor 1 unused; spec 2: vendors 0, 2
    close(serve(market, vendors, x, paths=paths, grouped=grouped).logits, serve_reference(market, vendors, x, paths))
    one = serve(market, vendors, x[:1], paths=paths[:1], grouped=grouped).logits
    close(one, serve_reference(market, vendors, x[:1], paths[:1]))


def test_specs_without_a_grouped_rule_fall_back_to_vmap():
    torch.manual_seed(1)
    specs = [nn.Sequential(nn.Linear(6, 8), Scale(8), nn.Tanh()), nn.Linear(8, 3)]
    market, vendors = market_and_vendors(specs, [4, 3])
    x = torch.randn(9, 6)
    out = serve(market, vendors, x, generator=torch.Generator().manual_seed(0))
    close(out.logits, serve_reference(market, vendors, x, out.paths))


def test_given_paths_are_served_and_the_leader_path_is_the_base_model():
    market, vendors = market_and_vendors(tiny_cnn(), [3, 2, 4])
    x = torch.randn(6, 1, 10, 10)
    leader = serve(market, vendors, x, paths=torch.zeros(6, 3, dtype=torch.int64))
    close(leader.logits, market(x))
    paths = torch.tensor([[2, 1, 3], [0, 0, 0], [1, 1, 1], [2, 0, 3], [0, 1, 2], [1, 0, 0]])
    out = serve(market, vendors, x, paths=paths)
    assert torch.equal(out.paths, paths)
    close(out.logits, serve_reference(market, vendors, x, paths))


def test_paths_are_uniform_and_a_function_of_the_generator():
    a = random_paths([4, 4, 2], 4000, torch.Generator().manual_seed(3))
    b = random_paths([4, 4, 2], 4000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    for k, m in enumerate([4, 4, 2]):
        freq = torch.bincount(a[:, k], minlength=m).float() / 4000
        assert torch.all((freq - 1 / m).abs() < 0.04)
    even = balanced_paths([4, 3], 10, torch.Generator().manual_seed(0))
    for k, m in enumerate([4, 3]):
        counts = torch.bincount(even[:, k], minlength=m)
        assert int(counts.max() - counts.min()) <= 1


def test_serving_mistakes_are_clear_errors():
    market, vendors = market_and_vendors(mlp([6, 4, 3]), [2, 2])
    x = torch.randn(3, 6)
    with pytest.raises(MarketError, match="expected paths"):
        serve(market, vendors, x, paths=torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(MarketError, match="outside the market"):
        serve(market, vendors, x, paths=torch.tensor([[0, 0], [2, 0], [0, 1]]))
    with pytest.raises(MarketError, match="do not match"):
        serve(market, draw_vendors(0, 0, [3, 2], [0.1, 0.1]), x)
    with pytest.raises(MarketError, match="spec 0"):
        serve(market, vendors, torch.randn(3, 7))
    empty = serve(market, vendors, torch.randn(0, 6))
    assert empty.logits.shape == (0, 3) and empty.paths.shape == (0, 2)
