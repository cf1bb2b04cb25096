"""The torch optimizer and lr schedule of a V2 run, built from a TrainConfig by name.

Every schedule with a horizon in steps is a pure function of the step, so the
rate of step t is the same in a resumed run as in one never interrupted.
Schedules that end (all but "constant") take their horizon from
`--schedule-steps`, else `--steps`, and a run that goes past it stays at the
schedule's final value. A run limited only by `--max-seconds` has no step
count to end on: its schedule follows the clock instead (`Schedule.seconds`),
ending with the time budget, and two runs of one seed part as soon as their
clocks differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..market import Market
from ..optim.checks import check_per_spec

OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "adamw")
SCHEDULE_NAMES = ("constant", "cosine", "step", "warmup-cosine")


def schedule_factor(name: str, step: int, horizon: int | None, warmup: int = 0, decay: float = 0.0,
                    floor: float = 0.0) -> float:
    """lr(step) / lr(0): the named shape times V2's (1 - decay)^step.

    cosine: from 1 down to `floor` at `horizon`; warmup-cosine: linear from
    1/warmup up to 1 over `warmup` steps, then cosine; step: x0.1 at half
    and again at three quarters of the horizon; constant: 1.
    """
    shape = 1.0 if name == "constant" else schedule_shape(name, min(step, horizon), horizon, warmup, floor)
    return shape * (1.0 - decay) ** step


def schedule_shape(name: str, t: float, horizon: float, warmup: int = 0, floor: float = 0.0) -> float:
    """The named shape at t of horizon (0 <= t <= horizon, both in steps or both in seconds)."""
    if name == "step":
        steps = isinstance(horizon, int)  # in steps the drops fall on whole steps
        half, three_quarters = (horizon // 2, 3 * horizon // 4) if steps else (horizon / 2, 0.75 * horizon)
        return 0.1 ** ((t >= half) + (t >= three_quarters))
    if name == "warmup-cosine" and t < warmup:
        return (t + 1) / warmup
    start = warmup if name == "warmup-cosine" else 0
    u = (t - start) / (horizon - start) if horizon > start else 1.0
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * u))


@dataclass
class Schedule:
    """`schedule_factor` as the callable of a LambdaLR (a dataclass, so its state_dict holds the settings).

    seconds: a horizon on the clock instead of in steps; the shape then
    follows `now`, the run's training seconds, which its loop sets before
    every step (the rate of the next step is computed at the end of this one).
    """

    name: str
    horizon: int | None
    warmup: int = 0
    decay: float = 0.0
    floor: float = 0.0
    seconds: float | None = None
    now: float = 0.0

    def __call__(self, step: int) -> float:
        if self.seconds is None or self.name == "constant":
            return schedule_factor(self.name, step, self.horizon, self.warmup, self.decay, self.floor)
        shape = schedule_shape(self.name, min(self.now, self.seconds), float(self.seconds), 0, self.floor)
        return shape * (1.0 - self.decay) ** step


def clock_schedule(optimizer) -> Schedule | None:
    """The schedule of a market optimizer when it follows the clock, else None."""
    for schedule in getattr(getattr(optimizer, "scheduler", None), "lr_lambdas", ()):
        if isinstance(schedule, Schedule) and schedule.seconds is not None:
            return schedule
    return None


def spec_param_groups(market: Market, lr: float | Sequence[float]) -> list[dict]:
    """One param group per spec, each with its rate (lr: one for all, or one per spec)."""
    rates = check_per_spec("learning rate", lr, market.depth, "rates")
    return [{"params": list(spec.parameters()), "lr": rate} for spec, rate in zip(market.specs, rates)]


def build_torch_optimizer(name: str, market: Market, lr: float | Sequence[float], momentum: float = 0.9,
                          weight_decay: float = 0.0, nesterov: bool = False) -> torch.optim.Optimizer:
    """sgd (V2 itself with lr = V2's lr), momentum (SGD with momentum, optionally Nesterov), adam, adamw.

    lr: one rate, or one per spec (a param group each).
    """
    groups = spec_param_groups(market, lr)
    lr = groups[0]["lr"]  # the optimizer's default; every group has its own
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZER_NAMES)}")


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
