"""The peer benchmark's plumbing (benchmarks/peer.py), on a tiny race; needs the optional `peer` extra."""

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("evotorch")

PEER = Path(__file__).resolve().parents[1] / "benchmarks" / "peer.py"


def load():
    spec = importlib.util.spec_from_file_location("peer", PEER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_tiny_race_interleaves_and_reports_both_sides():
    peer = load()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    market = peer.MarketMethod("v2", 0, vendors=(2, 2, 2), batch=8)
    pgpe = peer.PGPEMethod("pgpe", 0, popsize=4, batch=8)
    before = pgpe.searcher.status["center"].clone()
    torch.testing.assert_close(pgpe.logits(x[:4]), market.logits(x[:4]))  # the same initial weights
    results = peer.race([market, pgpe], 0.3, (x, y), (x[:16], y[:16]), seed=0, eval_every=0.1, log=lambda s: None)
    assert [r["name"] for r in results] == ["v2", "pgpe"]
    for r in results:
        assert r["steps"] >= 1 and r["seconds"] >= 0.3 and 0.0 <= r["accuracy"] <= 100.0
    assert results[1]["settings"]["popsize"] == 4 and results[1]["settings"]["center_learning_rate"] == 0.075
    for i in range(2):  # EvoTorch's PGPE updates from the population of the step before: two steps move it
        pgpe.step(x[8 * i : 8 * i + 8], y[8 * i : 8 * i + 8])
    assert not torch.equal(pgpe.searcher.status["center"], before)
    assert "| pgpe |" in peer.markdown({"tuning": False, "machine": "m", "date": "d", "load_average_before": [1],
                                        "load_average_after": [1], "seconds_per_method": 1, "seed": 0,
                                        "evaluated_on": "x", "results": results})
