"""Tests of marketplace.cost: the cost model against FLOPs torch counts over a market step."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from marketplace import Market, beautiful_mnist, draw_vendors
from marketplace.cost import beautiful_mnist_cost, format_table, market_cost, products, spec_flops
from helpers import run_cli


def counted_flops(market: Market, x: torch.Tensor) -> int:
    """What torch's FlopCounterMode measures over one batched evaluation of every path."""
    vendors = draw_vendors(0, 0, market.vendor_counts, [0.01] * market.depth)
    with FlopCounterMode(display=False) as counter:
        market.evaluate(x, vendors)
    return counter.get_total_flops()


@pytest.mark.parametrize("vendors, sampling", [((3,), 0), ((2, 3), 0), ((2, 3, 2), 0), ((3, 2, 2), (0, 2, 1))])
def test_cost_equals_flops_counted_over_a_market_evaluation(vendors, sampling):
    torch.manual_seed(0)
    market = Market(beautiful_mnist(len(vendors)), list(vendors), sampling)
    cost = beautiful_mnist_cost(vendors, sampling, batch=2)
    assert cost.flops == counted_flops(market, torch.randn(2, 1, 28, 28))
    assert cost.products == tuple(market.num_products())


def test_spec_flops_of_known_layers():
    conv, shape = spec_flops(nn.Conv2d(1, 32, 5), (1, 28, 28))
    assert conv == 2 * (1 * 5 * 5) * (32 * 24 * 24) and shape == (32, 24, 24)
    linear, shape = spec_flops(nn.Sequential(nn.Flatten(), nn.Linear(576, 10)), (64, 3, 3))
    assert linear == 2 * 576 * 10 and shape == (10,)
    grouped, _ = spec_flops(nn.Conv2d(4, 8, 3, groups=2), (4, 5, 5))
    assert grouped == 2 * (2 * 3 * 3) * (8 * 3 * 3)


def test_unit_cost_follows_the_articles_formula():
    """Equal specs S and M vendors: U_M = S M/(M-1) (M^N - 1)/M^N, U_A = N S."""
    n, m, width = 3, 16, 32
    specs = [nn.Linear(width, width) for _ in range(n)]
    cost = market_cost(specs, [m] * n, input_shape=(width,))
    s = 2 * width * width
    assert cost.products == (16, 256, 4096)
    assert cost.flops == s * (16 + 256 + 4096)
    assert cost.unit_cost == pytest.approx(s * m / (m - 1) * (m**n - 1) / m**n)
    assert cost.all_at_once_unit_cost == n * s
    assert cost.speedup == pytest.approx(n / (m / (m - 1) * (m**n - 1) / m**n))
    whole = market_cost([nn.Sequential(*[nn.Linear(width, width) for _ in range(n)])], [64], input_shape=(width,))
    assert whole.unit_cost == whole.all_at_once_unit_cost == n * s and whole.speedup == 1


def test_products_with_partial_sampling():
    assert products([4, 4, 4]) == (4, 16, 64)
    assert products([4, 4, 4], [0, 2, 3]) == (4, 8, 12)


def test_published_markets_at_equal_budget():
    """Depth 3 x 16 costs about what depth 1 x 64 costs per step, for 64x the products."""
    deep, flat = beautiful_mnist_cost((16, 16, 16)), beautiful_mnist_cost((64,))
    assert deep.final_products == 64 * flat.final_products
    assert deep.flops == pytest.approx(flat.flops, rel=0.02)
    assert "| 16x16x16 | full | 1 | 4,096 |" in format_table([deep, flat])



def test_cost_command(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "cost", "--vendors", "4,4,4", "--vendors", "64", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["market"] for r in rows] == ["4x4x4", "64"]
    assert rows[0]["flops"] == beautiful_mnist_cost((4, 4, 4)).flops
    assert rows[0]["final_products"] == rows[1]["final_products"] == 64
    assert rows[1]["speedup"] == 1
    code, out, err = run_cli(monkeypatch, capsys, "cost", "--vendors", "8,8,8", "--batch", "512")
    assert code == 0 and "| 8x8x8 | full | 512 | 512 |" in out


@pytest.mark.parametrize("args, hint", [
    (["--vendors", "4,x"], "comma-separated"),
    (["--vendors", "0,4"], "at least 1 vendor"),
    (["--vendors", "4,4", "--sampling", "0,9"], "samples 9 upstream"),
])
def test_cost_command_mistakes(monkeypatch, capsys, args, hint):
    code, out, err = run_cli(monkeypatch, capsys, "cost", *args)
    assert code == 2 and hint in err and "Traceback" not in err
