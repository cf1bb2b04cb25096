"""Tests of marketplace.norms: batch norm per product inside a market, and the market's refusal of BatchNorm."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from marketplace import Market, MarketError, draw_vendors
from marketplace.norms import ProductBatchNorm2d, norm_layer
from marketplace.training import TrainConfig, Trainer


def reference(x: torch.Tensor, group: int, module: ProductBatchNorm2d) -> torch.Tensor:
    """torch's own batch norm (training mode, no running stats), block by block."""
    return torch.cat([F.batch_norm(x[i : i + group], None, None, module.weight, module.bias, training=True,
                                   eps=module.eps) for i in range(0, len(x), group)])


@pytest.mark.parametrize("n, group", [(12, 4), (10, 4), (3, 8)])
def test_statistics_per_block_of_group_examples(n, group):
    torch.manual_seed(0)
    norm = ProductBatchNorm2d(3, group)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(n, 3, 5, 5) * 3 + 1
    torch.testing.assert_close(norm(x), reference(x, group, norm))
    torch.testing.assert_close(ProductBatchNorm2d(3, None)(x), reference(x, n, ProductBatchNorm2d(3, None)))


def specs(norm):
    torch.manual_seed(1)
    return [nn.Sequential(nn.Conv2d(1, 4, 3), norm(4), nn.ReLU()),
            nn.Sequential(nn.Conv2d(4, 4, 3), norm(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))]


def looped(market: Market, x: torch.Tensor, vendors) -> torch.Tensor:
    """Every path on its own: vendor weights applied to one product's batch at a time."""
    outs = []
    for path in market.evaluate(x, vendors).paths.tolist():
        h = x
        for k, j in enumerate(path):
            params = {n: p[j] for n, p in market.vendor_parameters(k, vendors).items()}
            h = functional_call(market.specs[k], params, (h,))
        outs.append(h)
    return torch.stack(outs)


def test_product_batch_norm_in_a_market_normalises_each_product_alone():
    batch = 6
    market = Market(specs(functools.partial(ProductBatchNorm2d, group=batch)), [2, 3])
    vendors = draw_vendors(0, 0, [2, 3], [0.05, 0.05])
    x = torch.randn(batch, 1, 8, 8)
    torch.testing.assert_close(market.evaluate(x, vendors).products, looped(market, x, vendors), atol=1e-5, rtol=1e-4)


def test_mixed_batch_norm_mixes_the_upstream_products():
    batch = 6
    market = Market(specs(functools.partial(ProductBatchNorm2d, group=None)), [2, 3])
    vendors = draw_vendors(0, 0, [2, 3], [0.5, 0.5])
    x = torch.randn(batch, 1, 8, 8)
    assert not torch.allclose(market.evaluate(x, vendors).products, looped(market, x, vendors), atol=1e-4)


def test_the_market_still_refuses_batchnorm(small_data):
    with pytest.raises(MarketError, match="BatchNorm2d: its batch statistics and running averages"):
        Market(specs(nn.BatchNorm2d), [2, 2])
    with pytest.raises(MarketError, match="use InstanceNorm"):
        Trainer(TrainConfig(vendors=(2, 2, 2), norm="batch", steps=1, device="cpu", data_dir=str(small_data)))
    assert not list(ProductBatchNorm2d(4, 8).buffers())


def test_norm_names():
    assert norm_layer("instance", 8) == "instance"
    assert norm_layer("product-batch", 8)(4).group == 8
    assert norm_layer("mixed-batch", 8)(4).group is None
    with pytest.raises(ValueError, match="unknown norm"):
        norm_layer("layer", 8)
