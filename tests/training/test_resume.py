"""Tests of resuming a training run: bit-identical to an uninterrupted run, after a crash, and what it refuses."""

from __future__ import annotations

import pytest
import torch

from marketplace.errors import MarketplaceError
from marketplace.training import Trainer, load_checkpoint

from helpers import StopAt, assert_same_weights
from helpers import train_config as config

pytestmark = pytest.mark.usefixtures("small_data")


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
                 "over 1 steps, not 6 steps (schedule_steps=1 continues it)", id="schedule-horizon"),
    pytest.param(dict(schedule="cosine", steps=None, max_seconds=0.2),
                 dict(schedule="cosine", steps=None, max_seconds=9),
                 "over 0.2 s on the clock, not 9 s on the clock (max_seconds=0.2 without steps continues it)",
                 id="clock-horizon"),
    pytest.param(dict(schedule="cosine", steps=None, max_seconds=0.2), dict(schedule="cosine", steps=6),
                 "over 0.2 s on the clock, not 6 steps", id="clock-to-steps"),
])
def test_resume_with_other_settings_is_refused_in_one_line(small_data, tmp_path, saved, given, hint):
    """A checkpoint restores the optimizer's rates: a setting that differs would be overridden silently."""
    ckpt = tmp_path / "run.safetensors"
    Trainer(config(small_data, **{"steps": 1, "checkpoint": str(ckpt), **saved})).run()
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
