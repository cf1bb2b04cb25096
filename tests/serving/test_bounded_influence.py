"""Rank attribution bounds what one record can do to an update; the server keeps its store to one attribution."""

import pytest
import torch

from marketplace import Market
from marketplace.errors import MarketplaceError
from marketplace.models import mlp
from marketplace.optim import V2
from marketplace.serving import ServerConfig, engine_from_market


def direction(attribution: str, losses: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    opt = V2(Market(mlp([6, 5, 3]), [4, 4]), lr=0.1, per_spec=False, seed=0, attribution=attribution)
    return torch.cat(opt.directions(losses, paths))


@pytest.mark.parametrize("attack", [3e38, -3e38, 1e6])
def test_one_extreme_loss_steers_zscores_but_not_ranks(attack):
    g = torch.Generator().manual_seed(0)
    paths = torch.randint(0, 4, (64, 2), generator=g)
    honest = torch.rand(64, generator=g, dtype=torch.float64) + 1.0
    poisoned = honest.clone()
    poisoned[0] = attack  # one client's record
    cos = {a: float(torch.nn.functional.cosine_similarity(direction(a, honest, paths),
                                                          direction(a, poisoned, paths), dim=0))
           for a in ("zscore", "rank")}
    assert cos["rank"] > 0.9  # the record counts as one of 64, as any other does
    assert cos["zscore"] < cos["rank"] - 0.2  # with z-scores that one record sets the direction


def test_a_store_learns_with_one_attribution(tmp_path):
    market = lambda: Market(mlp([6, 5, 3]), [2, 2])
    config = lambda a: ServerConfig(records=4, store=str(tmp_path / "store"), token="t", attribution=a)
    torch.manual_seed(0)
    engine_from_market(market(), config("rank"), (6,)).close()
    torch.manual_seed(0)
    with pytest.raises(MarketplaceError, match="rank attribution, not zscore"):
        engine_from_market(market(), config("zscore"), (6,))
    with pytest.raises(MarketplaceError, match="'zscore' or 'rank'"):
        ServerConfig(token="t", attribution="median").validate()
