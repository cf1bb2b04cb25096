"""Mirrored records: each request also runs along its path with every delta negated (a central difference)."""

import copy

import pytest
import torch
from torch import nn

from marketplace import Market, MarketplaceError, V2
from marketplace.continual import ContinualLearner, per_example_cross_entropy
from marketplace.continual.config import ContinualConfig
from marketplace.continual.serving import serve_reference
from marketplace.models import mlp


class Negated:
    """The same vendors with every delta negated: the mirror, materialised for the slow reference."""

    def __init__(self, vendors):
        self.vendors, self.counts, self.sampling_seed = vendors, vendors.counts, vendors.sampling_seed

    def deltas(self, k, numel, device):
        return -self.vendors.deltas(k, numel, device)


def dense_market():
    torch.manual_seed(0)
    return Market(mlp([6, 5, 3]), [3, 2]), torch.randn(8, 6)


def lowrank_market():
    torch.manual_seed(0)
    specs = [nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten()), nn.Sequential(nn.Linear(48, 3))]
    return Market(specs, [3, 2], rank=2), torch.randn(8, 1, 6, 6)


def weights(market):
    return torch.cat([market.flat_parameters(k) for k in range(market.depth)])


@pytest.mark.parametrize("make", [dense_market, lowrank_market], ids=["dense", "lowrank"])
def test_a_mirrored_record_is_half_the_path_loss_minus_its_mirrors(make):
    market, x = make()
    learner = ContinualLearner(V2(market, lr=0.05, probe_scale=1.0, per_spec=False, seed=1), records=8,
                               path_seed=1, mirrored=True)
    vendors, served_with = learner.vendors, copy.deepcopy(market)  # the weights of the step, before its update
    y = torch.randint(0, 3, (8,))
    response = learner.serve(x, labels=y)
    plus = serve_reference(served_with, vendors, x, response.paths)
    minus = serve_reference(served_with, Negated(vendors), x, response.paths)
    torch.testing.assert_close(response.path_logits, plus, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(response.reference, minus, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(response.logits, (plus + minus) / 2, rtol=1e-5, atol=1e-5)
    assert learner.step == 1  # and the update followed those records:
    twin_market, _ = make()
    twin = V2(twin_market, lr=0.05, probe_scale=1.0, per_spec=False, seed=1)
    twin.step((per_example_cross_entropy(plus, y) - per_example_cross_entropy(minus, y)) / 2, response.paths)
    torch.testing.assert_close(weights(market), weights(twin_market), rtol=0, atol=1e-6)


def test_mirrored_records_survive_delayed_labels_and_a_saved_state():
    def make():
        market, _ = dense_market()
        return ContinualLearner(V2(market, lr=0.05, probe_scale=1.0, per_spec=False, seed=1), records=8,
                                path_seed=1, mirrored=True)

    now, later = make(), make()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    now.serve(x, labels=y)
    waiting = later.serve(x)
    restored = make()
    restored.load_state_dict(later.state_dict())
    for learner in (later, restored):
        learner.label(waiting.ids[::-1], y.flip(0))
        assert learner.step == 1
        torch.testing.assert_close(weights(learner.market), weights(now.market), rtol=0, atol=1e-6)
    plain, _ = dense_market()
    with pytest.raises(MarketplaceError, match="mirrored"):
        ContinualLearner(V2(plain, lr=0.05, seed=1), records=8).load_state_dict(later.state_dict())


def test_baseline_and_mirrored_are_one_or_the_other():
    market, _ = dense_market()
    with pytest.raises(ValueError, match="choose one"):
        ContinualLearner(V2(market, lr=0.05, seed=1), records=8, baseline=True, mirrored=True)
    with pytest.raises(MarketplaceError, match="baseline and mirrored"):
        ContinualConfig(baseline=True, mirrored=True).validate()
