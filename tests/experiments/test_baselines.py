"""Tests of experiments.lib.baselines: backprop on the market's CNN, data, batches and hooks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import marketplace.training.loop as train_module
from marketplace.errors import MarketplaceError
from experiments.lib.baselines import BackpropConfig, BackpropTrainer, build_model, train_backprop
from marketplace.models import beautiful_mnist
from marketplace.training import Hook, JsonLog, ProgressBar, TrainConfig, Trainer, build_market

pytestmark = pytest.mark.usefixtures("small_data")


class Record(Hook):
    def __init__(self):
        self.steps, self.summary = [], None

    def on_step(self, metrics):
        self.steps.append(dict(metrics))

    def on_end(self, summary):
        self.summary = summary


def config(data_dir, **overrides) -> BackpropConfig:
    base = dict(batch=8, steps=3, log_every=1, eval_every=2, eval_samples=50, device="cpu", data_dir=str(data_dir))
    return BackpropConfig(**{**base, **overrides})


def test_initial_weights_are_the_markets_base_weights():
    model = build_model(BackpropConfig(norm="instance", seed=7), torch.device("cpu"))
    market = build_market(TrainConfig(vendors=(2, 2, 2), seed=7), torch.device("cpu"))
    ours, theirs = list(model.parameters()), list(market.parameters())
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_batchnorm_variant_only_swaps_the_norm():
    bn = build_model(BackpropConfig(norm="batch", seed=7), torch.device("cpu"))
    inn = build_model(BackpropConfig(norm="instance", seed=7), torch.device("cpu"))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 2
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in bn.modules())
    convs = lambda model: [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(torch.equal(a, b) for a, b in zip(convs(bn), convs(inn)))
    with pytest.raises(ValueError, match="unknown norm"):
        beautiful_mnist(norm="group")


def test_same_batches_as_the_market_trainer(small_data, monkeypatch):
    calls = {"market": [], "backprop": []}
    real = train_module.batch_indices
    who = ["market"]

    def spy(seed, step, n, batch):
        calls[who[0]].append((seed, step, n, batch))
        return real(seed, step, n, batch)

    monkeypatch.setattr(train_module, "batch_indices", spy)
    Trainer(TrainConfig(vendors=(2,), batch=8, steps=3, seed=5, eval_samples=50, device="cpu",
                        data_dir=str(small_data))).run()
    who[0] = "backprop"
    BackpropTrainer(config(small_data, seed=5)).run()
    assert calls["market"] == calls["backprop"] == [(5, t, 60_000, 8) for t in range(3)]


@pytest.mark.parametrize("algorithm, norm", [("sgd", "batch"), ("adam", "instance")])
def test_metrics_and_summary_match_the_market_trainer(small_data, tmp_path, algorithm, norm):
    rec = Record()
    log = tmp_path / "b.jsonl"
    summary = train_backprop(config(small_data, algorithm=algorithm, norm=norm), [rec, JsonLog(log)])
    market_summary = Trainer(TrainConfig(vendors=(2,), batch=8, steps=1, eval_samples=50, device="cpu",
                                         data_dir=str(small_data))).run()
    assert set(summary) == set(market_summary)
    assert summary["steps"] == 3 and summary["algorithm"] == algorithm and 0 <= summary["test_accuracy"] <= 100
    assert [m["step"] for m in rec.steps] == [1, 2, 3]
    for m in rec.steps:
        assert {"loss", "train_accuracy", "lr", "steps_per_second", "seconds"} <= set(m)
    assert "test_accuracy" in rec.steps[1] and "test_accuracy" not in rec.steps[0]
    assert rec.steps[0]["lr"] == pytest.approx(3e-3 if algorithm == "sgd" else 1e-3)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["config"]["algorithm"] == algorithm and lines[-1]["event"] == "end"


def test_backprop_learns_and_batchnorm_tracks_running_stats(small_data):
    trainer = BackpropTrainer(config(small_data, algorithm="adam", norm="batch", batch=32, steps=20, eval_every=100))
    before, _ = trainer.evaluate(trainer.x_test, trainer.y_test)
    summary = trainer.run()
    assert summary["test_accuracy"] > max(before, 40.0)
    bns = [m for m in trainer.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(int(m.num_batches_tracked) == 20 for m in bns)
    assert trainer.model.training  # evaluation switches back to training mode


def test_progress_bar_takes_a_backprop_run(small_data):
    import io

    from rich.console import Console

    buf = io.StringIO()
    train_backprop(config(small_data, steps=2), [ProgressBar(Console(file=buf, width=120))])
    assert "test accuracy" in buf.getvalue()


@pytest.mark.parametrize("overrides, hint", [
    (dict(algorithm="rmsprop"), "unknown backprop algorithm"),
    (dict(norm="product-batch"), "norm"),
    (dict(steps=None), "steps"),
    (dict(lr=-1.0), "lr"),
    (dict(batch=0), "batch"),
])
def test_bad_configs_are_refused(small_data, overrides, hint):
    with pytest.raises(MarketplaceError, match=hint):
        BackpropTrainer(config(small_data, **overrides))
