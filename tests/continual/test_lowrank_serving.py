"""Continual serving with low-rank vendors: random paths through base weights plus corrections, V2 from records."""

import copy

import pytest
import torch
from torch import nn

from marketplace import Market, V2
from marketplace.continual import ContinualLearner, per_example_cross_entropy, serve
from marketplace.continual.serving import serve_reference


def lowrank_market(rank=2):
    torch.manual_seed(0)
    specs = [nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten()), nn.Sequential(nn.Linear(48, 3))]
    return Market(specs, [3, 2], rank=rank)


def weights(market):
    return torch.cat([market.flat_parameters(k) for k in range(market.depth)])


@pytest.mark.parametrize("batch", [1, 2, 9])
def test_served_paths_equal_each_example_alone_with_materialised_vendors(batch):
    market = lowrank_market()
    opt = V2(market, lr=0.1, probe_scale=1.0, seed=3)
    x = torch.randn(batch, 1, 6, 6)
    out = serve(market, opt.vendors, x, generator=torch.Generator().manual_seed(batch))
    reference = serve_reference(market, opt.vendors, x, out.paths)  # reads the materialised deltas
    torch.testing.assert_close(out.logits, reference, rtol=1e-5, atol=1e-5)


def test_k_labelled_requests_reconcile_as_v2_on_low_rank_vendors():
    market = lowrank_market()
    learner = ContinualLearner(V2(market, lr=0.05, probe_scale=1.0, per_spec=False, seed=1), records=8, path_seed=1)
    twin = copy.deepcopy(learner.optimizer)
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    response = learner.infer(x)  # the server's route: the vendors' low-rank parts made once per step
    learner.record(learner.loss_fn(response.logits, y), response.paths, response.step)
    assert learner.step == 1
    served = serve(twin.market, twin.vendors, x, paths=response.paths)
    twin.step(per_example_cross_entropy(served.logits, y), response.paths)
    torch.testing.assert_close(weights(learner.market), weights(twin.market), rtol=0, atol=0)


def test_server_config_rank_rebuilds_the_checkpoints_market(tmp_path):
    from helpers import tiny_checkpoint
    from marketplace.serving import ServerConfig, engine_from_checkpoint

    path = tiny_checkpoint(tmp_path / "c.safetensors")
    config = ServerConfig(records=4, store=str(tmp_path / "store"), token="t", rank=1, learning=False)
    engine = engine_from_checkpoint(path, config)
    assert engine.market.rank == 1 and engine.market_info()["rank"] == 1
    dense = engine_from_checkpoint(path, ServerConfig(records=4, store=str(tmp_path / "s2"), token="t",
                                                      learning=False))
    assert dense.market.rank == 0 and "rank" not in dense.market_info()
