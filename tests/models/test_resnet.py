"""The model presets: the ResNet's splits, the registry, the beautiful-MNIST CNN on other image sizes."""

import pytest
import torch

from marketplace import Market, draw_vendors
from marketplace.models import ARCHS, PRESETS, ModelError, build_model, resnet, resnet_units
from marketplace.models.resnet import split_units


@pytest.mark.parametrize("specs", [1, 2, 3, 4, 5])
def test_resnet8_splits_compute_the_same_function(specs):
    torch.manual_seed(0)
    whole = resnet(1)
    torch.manual_seed(0)
    split = resnet(specs)
    assert len(split) == specs
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(Market(split, 1)(x), Market(whole, 1)(x))


def test_split_units_keeps_the_order_and_every_unit():
    units = list(range(11))  # stem, 9 blocks, head (resnet20)
    for specs in range(1, 12):
        groups = split_units(units, specs)
        assert [u for g in groups for u in g] == units and len(groups) == specs
    assert split_units(units, 4) == [[0, 1, 2, 3], [4, 5], [6, 7], [8, 9, 10]]
    with pytest.raises(ValueError, match="1 to 11 specs, not 12"):
        split_units(units, 12)


@pytest.mark.parametrize("arch,params", [("resnet8", 77_754), ("resnet20", 272_186)])
def test_resnet_sizes(arch, params):
    assert sum(p.numel() for u in resnet_units(arch, 1, 10) for p in u.parameters()) == params


def test_resnet18_on_cifar_shapes_as_a_market():
    torch.manual_seed(0)
    market = Market(resnet(4, in_channels=3, arch="resnet18"), vendors=[2, 1, 1, 2])
    assert sum(p.numel() for p in market.parameters()) == 11_173_962
    out = market.evaluate(torch.randn(1, 3, 32, 32), draw_vendors(0, 0, market.vendor_counts, [1e-3] * 4))
    assert out.products.shape == (4, 1, 10)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_a_market_for_its_data(name):
    specs = 3 if name in ("beautiful-mnist", "mlp") else 4
    shape = (3, 32, 32) if name != "mlp" else (1, 28, 28)
    if name == "resnet18":
        shape = (3, 16, 16)
    market = Market(build_model(name, specs, shape, 7), vendors=2)
    assert market.depth == specs
    assert market(torch.randn(2, *shape)).shape == (2, 7)


def test_preset_mistakes_are_one_line():
    with pytest.raises(ModelError, match="splits into 1, 2 or 3 specs, not 4"):
        build_model("beautiful-mnist", 4, (1, 28, 28), 10)
    with pytest.raises(ModelError, match="resnet8: this ResNet has 3 blocks: split it into 1 to 5 specs, not 6"):
        build_model("resnet", 6, (1, 28, 28), 10)
    with pytest.raises(ModelError, match="reads images"):
        build_model("resnet", 2, (784,), 10)
    with pytest.raises(ModelError, match="split cuts a user's nn.Sequential"):
        build_model("mlp", 2, (784,), 10, split=(1,))
    with pytest.raises(ModelError, match="unknown model 'resnet50'"):
        build_model("resnet50", 2, (1, 28, 28), 10)
    assert set(ARCHS) <= set(PRESETS)
