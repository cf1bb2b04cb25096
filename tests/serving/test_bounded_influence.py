"""Rank attribution bounds what one record can do to an update; the server keeps its store to one attribution."""

import pytest
import torch

from marketplace import Market
from marketplace.continual.config import ContinualConfig
from marketplace.errors import MarketplaceError
from marketplace.models import mlp
from marketplace.optim import V2
from marketplace.serving import ServerConfig, engine_from_market
from marketplace.serving.engine import STORE_FILE
from marketplace.serving.store import Store
from marketplace.training.config import TrainConfig


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


def test_rank_and_balanced_paths_are_the_defaults_of_the_server_and_of_continual_learning():
    assert ServerConfig().attribution == "rank" and ContinualConfig().attribution == "rank"
    assert ServerConfig().balanced and ContinualConfig().balanced
    # the training optimizer and its config keep V2 as published
    assert V2(Market(mlp([6, 5, 3]), [2, 2])).estimator.attribution == "zscore"
    assert TrainConfig().attribution == "zscore"


def test_a_store_made_under_zscore_refuses_the_default(tmp_path):
    market = lambda: Market(mlp([6, 5, 3]), [2, 2])
    store = str(tmp_path / "store")
    torch.manual_seed(0)
    engine_from_market(market(), ServerConfig(records=4, store=store, token="t", attribution="zscore"), (6,)).close()
    torch.manual_seed(0)
    with pytest.raises(MarketplaceError, match="zscore attribution, not rank: start with attribution zscore") as e:
        engine_from_market(market(), ServerConfig(records=4, store=store, token="t"), (6,))
    assert "\n" not in str(e.value)


def test_a_store_from_before_the_option_learned_with_zscores(tmp_path):
    """A store with records but no attribution noted was made when z-scores were the only rule."""
    (tmp_path / "store").mkdir()
    old = Store(tmp_path / "store" / STORE_FILE)
    old.add_records("report", [0, 0], torch.zeros(2, 2, dtype=torch.int64), torch.tensor([1.0, 2.0]))
    old.close()
    torch.manual_seed(0)
    with pytest.raises(MarketplaceError, match="zscore attribution, not rank"):
        engine_from_market(Market(mlp([6, 5, 3]), [2, 2]), ServerConfig(records=4, store=str(tmp_path / "store"),
                                                                        token="t"), (6,))
