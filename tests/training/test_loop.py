"""Tests of marketplace.training's loop: resume == uninterrupted, determinism, hooks, stopping, bad configs, NaN."""

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
from marketplace.training import Hook, JsonLog, ProgressBar, TrainConfig, Trainer, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("small_data")


def config(data_dir, **overrides) -> TrainConfig:
    """A tiny run: 2x2x2 market, batch 8, CPU, 200 test examples."""
    base = dict(vendors=(2, 2, 2), batch=8, steps=3, eval_samples=200, device="cpu", data_dir=str(data_dir))
    base.update(overrides)
    return TrainConfig(**base)


def assert_same_weights(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def all_finite(market) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in market.parameters())


class StopAt(Hook):
    """Simulate a crash (or a runaway loop) by raising after a given step."""

    class Crash(Exception):
        pass

    def __init__(self, step: int):
        self.step = step

    def on_step(self, metrics):
        if metrics["step"] >= self.step:
            raise StopAt.Crash(f"stopped at step {metrics['step']}")


class Snapshots(Hook):
    """Copies of the base weights after every step."""

    def on_start(self, config, market, start_step):
        self.market = market
        self.by_step = {start_step: {k: v.clone() for k, v in market.state_dict().items()}}

    def on_step(self, metrics):
        self.by_step[metrics["step"]] = {k: v.clone() for k, v in self.market.state_dict().items()}


# -- resume == uninterrupted ------------------------------------------------


@pytest.mark.parametrize(
    "algorithm, vendors, total, split, options",
    [
        ("v2", (2, 2, 2), 4, 2, {}),
        ("v1", (2, 2, 2), 4, 2, {}),
        ("adaptive", (2,), 2, 1, {}),  # two forward passes a step: keep it smaller
        ("adaptive", (2,), 3, 1, dict(rate_bounds=(0.95, 1.05), rate_smoothing=0.5)),  # the stabilised rate
    ],
)
def test_resume_is_bit_identical_to_an_uninterrupted_run(small_data, tmp_path, algorithm, vendors, total, split,
                                                         options):
    """Run A: `total` steps straight. Run B: `split` steps, saved; a new Trainer resumes it to `total`."""
    run = dict(algorithm=algorithm, vendors=vendors, **options)
    a = Trainer(config(small_data, **run, steps=total))
    summary_a = a.run()
    assert summary_a["steps"] == total

    ckpt = tmp_path / "b.safetensors"
    b1 = Trainer(config(small_data, **run, steps=split, checkpoint=str(ckpt)))
    b1.run()
    assert load_checkpoint(ckpt).optimizer["steps"] == split
    b2 = Trainer(config(small_data, **run, steps=total, checkpoint=str(ckpt), resume=True))
    assert b2.optimizer.steps == split  # restored before running
    assert_same_weights(b1.market.state_dict(), b2.market.state_dict())
    summary_b = b2.run()

    assert summary_b["steps"] == total
    assert_same_weights(a.market.state_dict(), b2.market.state_dict())
    sa, sb = a.optimizer.state_dict(), b2.optimizer.state_dict()
    assert sa["steps"] == sb["steps"] == total
    assert sa["lr"] == sb["lr"]
    for name in ("meta_lr", "rate_bounds", "rate_smoothing", "lr0"):
        assert sa.get(name) == sb.get(name)
    for x, y in zip(sa["seeds"], sb["seeds"]):
        assert torch.equal(x, y)
    assert summary_a["test_accuracy"] == summary_b["test_accuracy"]
    # the checkpoint at the end holds the final state
    final = load_checkpoint(ckpt)
    assert final.optimizer["steps"] == total
    assert_same_weights(final.model, {k: v.cpu() for k, v in a.market.state_dict().items()})


def test_resume_after_a_crash_from_a_periodic_checkpoint(small_data, tmp_path):
    """A run killed after step 3 with checkpoints every 2 steps resumes from step 2 to the same weights."""
    a = Trainer(config(small_data, vendors=(2, 2), steps=3))
    a.run()

    ckpt = tmp_path / "c.safetensors"
    crashed = Trainer(config(small_data, vendors=(2, 2), steps=3, checkpoint=str(ckpt), checkpoint_every=2),
                      hooks=[StopAt(3)])
    with pytest.raises(StopAt.Crash):
        crashed.run()
    assert load_checkpoint(ckpt).optimizer["steps"] == 2

    resumed = Trainer(config(small_data, vendors=(2, 2), steps=3, checkpoint=str(ckpt), checkpoint_every=2,
                             resume=True))
    assert resumed.optimizer.steps == 2
    assert resumed.run()["steps"] == 3
    assert_same_weights(a.market.state_dict(), resumed.market.state_dict())
    assert a.optimizer.lr == resumed.optimizer.lr


@pytest.mark.parametrize("saved, given, hint", [
    pytest.param({}, dict(probe_scale=0.05), "probe_scale=0.03, not 0.05", id="probe-scale"),
    pytest.param({}, dict(batch=16), "batch=8, not 16", id="batch"),
    pytest.param({}, dict(lr=0.2), "lr=0.15, not 0.2", id="lr-against-the-default"),
    pytest.param(dict(algorithm="adaptive", vendors=(2,)),
                 dict(algorithm="adaptive", vendors=(2,), rate_bounds=(0.5, 2)),
                 "rate_bounds=None, not (0.5, 2)", id="rate-bounds"),
    pytest.param(dict(schedule="cosine"), dict(schedule="cosine", steps=6),
                 "over 1 steps, not 6 (--schedule-steps 1 continues it)", id="schedule-horizon"),
])
def test_resume_with_other_settings_is_refused_in_one_line(small_data, tmp_path, saved, given, hint):
    """A checkpoint restores the optimizer's rates: a setting that differs would be overridden silently."""
    ckpt = tmp_path / "run.safetensors"
    Trainer(config(small_data, steps=1, checkpoint=str(ckpt), **saved)).run()
    with pytest.raises(MarketplaceError) as info:
        Trainer(config(small_data, checkpoint=str(ckpt), resume=True, **given))
    message = str(info.value)
    assert hint in message and "resume with the same settings" in message and "\n" not in message


def test_resume_accepts_what_may_change_between_the_parts_of_a_run(small_data, tmp_path):
    """More steps, other evaluations, the default lr spelled out: the same run, resumed."""
    ckpt = tmp_path / "run.safetensors"
    Trainer(config(small_data, steps=1, checkpoint=str(ckpt))).run()
    resumed = Trainer(config(small_data, steps=2, lr=0.15, eval_every=5, eval_samples=100, checkpoint=str(ckpt),
                             checkpoint_every=7, resume=True))
    assert resumed.optimizer.steps == 1


def test_resume_without_an_existing_checkpoint_starts_fresh(small_data, tmp_path):
    ckpt = tmp_path / "new.safetensors"
    t = Trainer(config(small_data, steps=1, checkpoint=str(ckpt), resume=True))
    assert t.optimizer.steps == 0
    assert t.run()["steps"] == 1
    assert load_checkpoint(ckpt).optimizer["steps"] == 1


def test_resuming_a_finished_run_does_no_more_steps(small_data, tmp_path):
    ckpt = tmp_path / "done.safetensors"
    first = Trainer(config(small_data, steps=1, checkpoint=str(ckpt)))
    first.run()
    again = Trainer(config(small_data, steps=1, checkpoint=str(ckpt), resume=True))
    summary = again.run()
    assert summary["steps"] == 1
    assert_same_weights(first.market.state_dict(), again.market.state_dict())


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(dict(vendors=(2, 2)), id="fewer-specs"),
        pytest.param(dict(vendors=(2,)), id="one-spec"),
        pytest.param(dict(vendors=(3, 2, 2)), id="other-counts"),
        pytest.param(dict(algorithm="v1"), id="other-algorithm"),
    ],
)
def test_resume_with_a_checkpoint_of_another_market_is_a_marketplace_error(small_data, tmp_path, overrides):
    ckpt = tmp_path / "222.safetensors"
    Trainer(config(small_data, checkpoint=str(ckpt))).save(str(ckpt), 0.0)
    with pytest.raises(MarketplaceError) as info:
        Trainer(config(small_data, checkpoint=str(ckpt), resume=True, **overrides))
    message = str(info.value)
    assert "\n" not in message.strip(), message
    assert not isinstance(info.value, RuntimeError)


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
        pytest.param(dict(steps=0), "--steps must be >= 1", id="steps-0"),
        pytest.param(dict(steps=-5), "--steps must be >= 1", id="steps-negative"),
        pytest.param(dict(steps=None, max_seconds=-3.0), "--max-seconds must be", id="max-seconds-negative"),
        pytest.param(dict(max_seconds=0.0), "--max-seconds must be", id="max-seconds-0"),
        pytest.param(dict(model="nope"), "unknown model 'nope'", id="unknown-model"),
        pytest.param(dict(batch=0), "--batch", id="batch-0"),
        pytest.param(dict(steps=None, max_seconds=None), "--steps", id="no-stop"),
        pytest.param(dict(resume=True, checkpoint=None), "--checkpoint", id="resume-no-checkpoint"),
        pytest.param(dict(eval_every=0), "--eval-every", id="eval-every-0"),
        pytest.param(dict(eval_samples=0, eval_every=1, steps=2), "--eval-samples", id="eval-samples-0"),
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
