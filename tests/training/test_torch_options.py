"""V2 through torch.optim in the trainer: schedules, exact resume, plain sgd = V2, bad options."""

from __future__ import annotations

import math

import pytest
import torch

from marketplace.errors import MarketplaceError
from marketplace.optim import V2, TorchMarketOptimizer
from marketplace.training import TrainConfig, Trainer, load_checkpoint
from marketplace.training.cheap_vendors import cheap_vendors, step_flops
from marketplace.training.schedules import Schedule, clock_schedule, schedule_factor

pytestmark = pytest.mark.usefixtures("small_data")


def config(data_dir, **overrides) -> TrainConfig:
    base = dict(vendors=(2, 2, 2), batch=8, steps=4, eval_samples=200, device="cpu", data_dir=str(data_dir))
    base.update(overrides)
    return TrainConfig(**base)


def test_schedule_shapes():
    assert schedule_factor("constant", 7, None, decay=0.1) == pytest.approx(0.9 ** 7)
    assert schedule_factor("cosine", 0, 10) == 1.0
    assert schedule_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert schedule_factor("cosine", 10, 10, floor=0.1) == pytest.approx(0.1)
    assert schedule_factor("cosine", 25, 10, floor=0.1) == pytest.approx(0.1)  # past the horizon: its end value
    assert [schedule_factor("step", t, 8) for t in (3, 4, 6)] == pytest.approx([1, 0.1, 0.01])
    assert [schedule_factor("warmup-cosine", t, 10, warmup=2) for t in (0, 1, 2)] == pytest.approx([0.5, 1, 1])
    assert schedule_factor("warmup-cosine", 6, 10, warmup=2) == pytest.approx(0.5)


def test_a_schedule_on_the_clock_follows_the_seconds_not_the_steps():
    clock = Schedule("cosine", None, decay=0.1, floor=0.1, seconds=60.0)
    assert clock(3) == pytest.approx(0.9 ** 3)  # now = 0: the full rate, times V2's decay per step
    clock.now = 30.0
    assert clock(0) == pytest.approx(0.55) and clock(1000) == pytest.approx(0.55 * 0.9 ** 1000)
    clock.now = 90.0
    assert clock(0) == pytest.approx(0.1)  # past the budget: the end value
    assert Schedule("constant", None, seconds=60.0, now=30.0)(0) == 1.0
    assert Schedule("cosine", None, seconds=0.5, now=0.25)(0) == pytest.approx(0.5)  # budgets under a second too
    assert [Schedule("step", None, seconds=0.5, now=t)(0) for t in (0.2, 0.3, 0.4)] == pytest.approx([1, 0.1, 0.01])


def test_a_max_seconds_run_anneals_over_its_budget(small_data):
    trainer = Trainer(config(small_data, schedule="cosine", steps=None, max_seconds=1.0, lr=0.2, decay=0.0))
    assert trainer.clock is clock_schedule(trainer.optimizer) and trainer.clock.seconds == 1.0
    assert trainer.optimizer.lr[0] == pytest.approx(0.2)
    trainer.run()
    assert trainer.clock.now >= 1.0 and trainer.optimizer.steps > 1
    assert trainer.optimizer.lr[0] < 0.05 * 0.2  # the last rates were computed near the end of the budget
    assert Trainer(config(small_data, schedule="cosine", steps=None, max_seconds=1.0, schedule_steps=5)).clock is None


def test_plain_sgd_is_v2_and_options_switch_to_torch(small_data):
    assert isinstance(Trainer(config(small_data)).optimizer, V2)
    trainer = Trainer(config(small_data, optimizer="momentum", schedule="cosine", antithetic=True))
    assert isinstance(trainer.optimizer, TorchMarketOptimizer)
    assert isinstance(trainer.optimizer.optimizer, torch.optim.SGD)
    assert trainer.optimizer.optimizer.param_groups[0]["momentum"] == 0.9


def test_cosine_anneals_the_rate_and_the_probe_width(small_data):
    trainer = Trainer(config(small_data, schedule="cosine", steps=4, lr=0.2, probe_scale=0.5, decay=0.0))
    widths = []
    for _ in range(4):
        widths.append(trainer.optimizer.probe_widths()[0])
        trainer.config.steps = trainer.optimizer.steps + 1
        trainer.run()
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert widths == pytest.approx(expected)
    assert trainer.optimizer.lr[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("overrides", [dict(), dict(schedule="cosine")])
def test_a_rate_per_spec_moves_and_probes_each_spec_at_its_own_rate(small_data, overrides):
    trainer = Trainer(config(small_data, lr=(0.2, 0.1, 0.05), probe_scale=0.5, decay=0.0, **overrides))
    assert trainer.optimizer.lr == pytest.approx([0.2, 0.1, 0.05])
    assert trainer.optimizer.probe_widths() == pytest.approx([0.1, 0.05, 0.025])
    before = [p.detach().clone() for p in trainer.market.parameters()]
    trainer.config.steps = 1
    trainer.run()
    moved = [torch.cat([(p.detach() - b).flatten() for p, b in zip(spec.parameters(), before_spec)]).norm()
             for spec, before_spec in zip(trainer.market.specs, split_by_spec(trainer.market, before))]
    assert [float(m) for m in moved] == pytest.approx([0.2, 0.1, 0.05], rel=1e-4)  # V2: a unit step per spec


def split_by_spec(market, tensors):
    out, i = [], 0
    for spec in market.specs:
        n = len(list(spec.parameters()))
        out.append(tensors[i:i + n])
        i += n
    return out


@pytest.mark.parametrize("overrides", [
    dict(optimizer="adam", lr=0.003, probe_width=0.005, direction="raw", schedule="warmup-cosine", warmup=1,
         schedule_steps=4),
    dict(optimizer="momentum", nesterov=True, schedule="cosine", schedule_steps=4, attribution="rank",
         antithetic=True, clip=1.0, lr=(0.2, 0.1, 0.05)),
])
def test_resume_with_a_torch_optimizer_and_schedule_is_exact(small_data, tmp_path, overrides):
    straight = Trainer(config(small_data, **overrides))
    straight.run()
    ckpt = tmp_path / "run.safetensors"
    Trainer(config(small_data, **overrides, steps=2, checkpoint=str(ckpt))).run()
    assert load_checkpoint(ckpt).optimizer["steps"] == 2
    resumed = Trainer(config(small_data, **overrides, checkpoint=str(ckpt), resume=True))
    assert resumed.optimizer.steps == 2
    resumed.run()
    for k, v in straight.market.state_dict().items():
        assert torch.equal(v, resumed.market.state_dict()[k]), k
    assert straight.optimizer.lr == resumed.optimizer.lr


def test_resuming_with_another_optimizer_is_refused(small_data, tmp_path):
    ckpt = tmp_path / "run.safetensors"
    Trainer(config(small_data, optimizer="momentum", steps=1, checkpoint=str(ckpt))).run()
    with pytest.raises(MarketplaceError, match="optimizer"):
        Trainer(config(small_data, optimizer="adam", checkpoint=str(ckpt), resume=True))


@pytest.mark.parametrize("overrides, hint", [
    (dict(optimizer="lion"), "optimizer"),
    (dict(schedule="linear"), "schedule"),
    (dict(attribution="median"), "attribution"),
    (dict(direction="up"), "direction"),
    (dict(algorithm="v1", optimizer="adam"), "v2 only"),
    (dict(schedule="warmup-cosine", warmup=2, steps=None, max_seconds=5.0), "warmup in steps"),
    (dict(schedule="warmup-cosine", warmup=0), "warmup"),
    (dict(momentum=1.0), "momentum"),
    (dict(probe_width=0.0), "probe_width"),
    (dict(min_lr=2.0), "min_lr"),
    (dict(cheap_vendors=-1.0), "cheap_vendors"),
])
def test_bad_torch_options_are_one_line_errors(small_data, overrides, hint):
    with pytest.raises(MarketplaceError, match=hint):
        config(small_data, **overrides).validate()


def test_cheap_vendors_double_the_cheap_spec_within_the_slack():
    costs = [100.0, 50.0, 1.0]  # per example; step cost of 4x4x4 = 400 + 800 + 64
    assert cheap_vendors(costs, (4, 4, 4), 0.0) == (4, 4, 4)
    assert cheap_vendors(costs, (4, 4, 4), 0.06) == (4, 4, 8)  # +64 of 1264 fits, +128 more does not
    assert cheap_vendors(costs, (4, 4, 4), 0.16) == (4, 4, 16)
    assert step_flops(costs, (4, 4, 16)) == 400 + 800 + 256


def test_cheap_vendors_in_a_run_gives_the_head_more_vendors(small_data):
    trainer = Trainer(config(small_data, cheap_vendors=0.05, steps=1))
    assert trainer.market.vendor_counts == (2, 2, 64)  # the 576 -> 10 head costs 0.05% of a conv vendor
    assert trainer.run()["vendors"] == [2, 2, 64]
