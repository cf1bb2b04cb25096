"""Tests of marketplace.training's loop: determinism, hooks, stopping, bad configs, NaN (resume: test_resume.py)."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from rich.console import Console

import marketplace.data as data_module
import marketplace.training.loop as train_module
from marketplace.errors import MarketplaceError
from marketplace.functional import NonFiniteLossError
from marketplace.training import Hook, JsonLog, ProgressBar, TrainConfig, Trainer, train

from helpers import StopAt, assert_same_weights
from helpers import train_config as config

pytestmark = pytest.mark.usefixtures("small_data")


def all_finite(market) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in market.parameters())


class Snapshots(Hook):
    """Copies of the base weights after every step."""

    def on_start(self, config, market, start_step):
        self.market = market
        self.by_step = {start_step: {k: v.clone() for k, v in market.state_dict().items()}}

    def on_step(self, metrics):
        self.by_step[metrics["step"]] = {k: v.clone() for k, v in self.market.state_dict().items()}


# -- determinism ------------------------------------------------------------


def test_same_seed_same_weights_other_seed_other_weights(small_data):
    runs = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        t = Trainer(config(small_data, steps=1, seed=seed))
        t.run()
        runs[name] = t.market.state_dict()
    assert_same_weights(runs["a"], runs["b"])
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_a_step_moves_the_weights_and_leaves_the_global_rng_alone(small_data):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    snaps = Snapshots()
    Trainer(config(small_data, steps=1), hooks=[snaps]).run()
    assert set(snaps.by_step) == {0, 1}
    assert any(not torch.equal(snaps.by_step[0][k], snaps.by_step[1][k]) for k in snaps.by_step[0])
    assert torch.equal(torch.get_rng_state(), state)


# -- hooks ------------------------------------------------------------------


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_log_writes_start_step_and_end_lines(small_data, tmp_path):
    log = tmp_path / "logs" / "run.jsonl"
    summary = train(config(small_data, steps=3, vendors=(2, 2), log_every=1, eval_every=2), hooks=[JsonLog(log)])
    lines = log.read_text().splitlines()
    records = [_strict(line) for line in lines]
    events = [r["event"] for r in records]
    assert events[0] == "start" and events[-1] == "end"
    assert events.count("step") == 3
    assert records[0]["step"] == 0
    assert records[0]["config"]["vendors"] == [2, 2]
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        assert math.isfinite(r["loss"]) and 0 <= r["train_accuracy"] <= 100
    assert "test_accuracy" in steps[1]  # eval_every=2
    assert records[-1]["test_accuracy"] == summary["test_accuracy"]
    assert records[-1]["steps"] == 3


def test_json_log_appends_across_runs(tmp_path):
    log = tmp_path / "run.jsonl"
    cfg = TrainConfig(steps=1)
    for run in range(2):
        hook = JsonLog(log)
        hook.on_start(cfg, None, 0)
        hook.on_step({"step": 1, "seconds": 0.1})  # step and seconds only: not logged
        hook.on_step({"step": 1, "seconds": 0.1, "loss": 2.3})
        hook.on_end({"steps": 1, "run": run})
    records = [_strict(line) for line in log.read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "step", "end"] * 2
    assert [r["run"] for r in records if r["event"] == "end"] == [0, 1]


# -- stopping ---------------------------------------------------------------


def test_max_seconds_alone_stops_the_run(small_data):
    out = io.StringIO()
    hooks = [StopAt(10_000), ProgressBar(Console(file=out, width=120))]  # StopAt: a guard, not the stop
    summary = train(config(small_data, steps=None, max_seconds=0.3), hooks=hooks)
    assert summary["steps"] >= 1
    assert summary["seconds"] >= 0.3 - 1e-3
    text = out.getvalue()
    assert "test accuracy" in text and f"{summary['test_accuracy']:.2f}%" in text


def test_steps_stop_first_and_the_summary(small_data):
    summary = train(config(small_data, steps=1, max_seconds=1e6, vendors=(2, 2)))
    assert 0.0 <= summary["test_accuracy"] <= 100.0
    assert math.isfinite(summary["test_loss"])
    assert summary["steps"] == 1 and summary["skipped_steps"] == 0
    assert summary["vendors"] == [2, 2] and summary["dataset"] == "mnist"
    assert summary["device"] == "cpu"
    json.dumps(summary)  # serialisable


# -- bad configurations -----------------------------------------------------


@pytest.mark.parametrize(
    "overrides, hint",
    [
        pytest.param(dict(dataset="svhn"), "fashion-mnist", id="unknown-dataset"),
        pytest.param(dict(algorithm="v3"), "v1", id="unknown-algorithm"),
        pytest.param(dict(vendors=(4, 0, 4)), "at least 1 vendor", id="zero-vendors"),
        pytest.param(dict(vendors=(2, 2, 2, 2)), "beautiful-mnist preset splits into 1, 2 or 3 specs", id="four-specs"),
        pytest.param(dict(vendors=()), "one count per spec", id="no-specs"),
        pytest.param(dict(steps=0), "steps must be >= 1", id="steps-0"),
        pytest.param(dict(steps=-5), "steps must be >= 1", id="steps-negative"),
        pytest.param(dict(steps=None, max_seconds=-3.0), "max_seconds must be", id="max-seconds-negative"),
        pytest.param(dict(max_seconds=0.0), "max_seconds must be", id="max-seconds-0"),
        pytest.param(dict(model="nope"), "unknown model 'nope'", id="unknown-model"),
        pytest.param(dict(batch=0), "batch", id="batch-0"),
        pytest.param(dict(steps=None, max_seconds=None), "steps", id="no-stop"),
        pytest.param(dict(resume=True, checkpoint=None), "checkpoint", id="resume-no-checkpoint"),
        pytest.param(dict(eval_every=0), "eval_every", id="eval-every-0"),
        pytest.param(dict(eval_samples=0, eval_every=1, steps=2), "eval_samples", id="eval-samples-0"),
        pytest.param(dict(device="warp-drive"), "warp-drive", id="unknown-device"),
    ],
)
def test_bad_configs_raise_marketplace_errors(small_data, overrides, hint):
    with pytest.raises(MarketplaceError) as info:
        train(config(small_data, **overrides))
    message = str(info.value)
    assert hint in message, message
    assert "\n" not in message, message


def test_cuda_without_cuda_is_a_marketplace_error(small_data):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(MarketplaceError, match="CUDA"):
        train(config(small_data, device="cuda"))


def test_validate_runs_before_any_data_is_loaded(monkeypatch, tmp_path):
    """A config error must not wait for (or depend on) the data set."""

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")

    monkeypatch.setattr(data_module, "load_data", no_data)
    with pytest.raises(MarketplaceError):
        Trainer(TrainConfig(vendors=(0,), steps=1, data_dir=str(tmp_path)))


# -- non-finite losses ------------------------------------------------------


def nan_at_step(monkeypatch, bad_step: int) -> None:
    """The loss of one path turns NaN on the `bad_step`-th evaluation (0-based)."""
    real = train_module.path_losses
    calls = {"n": 0}

    def path_losses(logits, target):
        losses = real(logits, target)
        if calls["n"] == bad_step:
            losses = losses.clone()
            losses[-1] = float("nan")
        calls["n"] += 1
        return losses

    monkeypatch.setattr(train_module, "path_losses", path_losses)


def test_nan_loss_raises_and_leaves_the_weights_finite(small_data, monkeypatch):
    clean = Trainer(config(small_data, steps=1))
    clean.run()

    nan_at_step(monkeypatch, 1)
    t = Trainer(config(small_data, steps=3, on_nonfinite="raise"))
    with pytest.raises(NonFiniteLossError) as info:
        t.run()
    assert isinstance(info.value, MarketplaceError)
    assert all_finite(t.market)
    assert t.optimizer.steps == 1
    assert_same_weights(clean.market.state_dict(), t.market.state_dict())  # the bad step changed nothing


def test_nan_loss_is_skipped_with_skip(small_data, monkeypatch):
    nan_at_step(monkeypatch, 1)
    snaps = Snapshots()
    with pytest.warns(RuntimeWarning, match="skipped"):
        summary = train(config(small_data, steps=3, on_nonfinite="skip"), hooks=[snaps])
    assert summary["steps"] == 3
    assert summary["skipped_steps"] == 1
    assert math.isfinite(summary["test_loss"])
    final = snaps.by_step[3]
    assert all(bool(torch.isfinite(v).all()) for v in final.values())
    assert_same_weights(snaps.by_step[1], snaps.by_step[2])  # step 2 was the skipped one
    assert any(not torch.equal(snaps.by_step[2][k], final[k]) for k in final)  # training went on


def test_skipped_count_survives_resume(small_data, monkeypatch, tmp_path):
    ckpt = tmp_path / "s.safetensors"
    nan_at_step(monkeypatch, 0)
    with pytest.warns(RuntimeWarning):
        train(config(small_data, steps=1, on_nonfinite="skip", checkpoint=str(ckpt)))
    # the patch fires only once: the resumed step is clean
    summary = Trainer(config(small_data, steps=2, on_nonfinite="skip", checkpoint=str(ckpt), resume=True)).run()
    assert summary["skipped_steps"] == 1
    assert summary["steps"] == 2


def test_json_log_stays_standard_json_with_a_nan_step(small_data, monkeypatch, tmp_path):
    """A skipped NaN step is still logged as standard JSON (no bare NaN tokens, which jq and JS refuse)."""
    nan_at_step(monkeypatch, 0)
    log = tmp_path / "nan.jsonl"
    with pytest.warns(RuntimeWarning):
        train(config(small_data, steps=1, vendors=(2, 2), on_nonfinite="skip"), hooks=[JsonLog(log)])
    lines = log.read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["start", "step", "end"]
    for line in lines:
        _strict(line)
