"""The settings of one continual-learning run, checked once, and which of them a resume must keep."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .. import checks
from ..functional import ATTRIBUTIONS

# Settings that shape what is learned: a run resumes only with the same values.
LEARNING_FIELDS = ("experiment", "old_per_step", "new_per_step", "few_shot", "vendors", "lr", "lr_end", "lr_hold",
                   "probe_scale", "unit", "records", "outliers", "augment", "balanced", "baseline", "mirrored",
                   "attribution", "learn", "average", "seed")
# What a run saved before a setting existed learned with.
SAVED_BEFORE = {"attribution": "zscore", "lr_end": None, "lr_hold": 0, "learn": "all", "mirrored": False,
                "average": None}
LEARN = ("all", "partial")  # which weights learn: all, or the biases, the norms and the head only


@dataclass
class ContinualConfig:
    """One run: the experiment, the serving market and learner, validation, and where state goes.

    Validation uses the base weights (their average over about `average`
    steps when given) on a fixed subsample: the first
    `eval_samples` old-class validation images and every new-class one,
    every `eval_every` steps (the whole sets at the start and the end).
    `save` is the run's checkpoint, written every `checkpoint_every` steps
    and at the end; with `resume` a run continues from it.
    """

    experiment: str = "dress"
    checkpoint: str = "runs/digits.safetensors"  # the base the run starts from
    steps: int = 1000
    old_per_step: int = 240
    new_per_step: int = 16
    few_shot: bool = False  # the published sampling: the first 240 old and first 16 new images only
    vendors: tuple[int, ...] = (4, 4, 4)  # the serving market (the checkpoint's spec split must match)
    lr: float = 1e-2
    lr_end: float | None = None  # the rate at the last step; None: lr throughout (see `scheduled_rate`)
    lr_hold: int = 0  # steps at lr before it decays towards lr_end
    probe_scale: float = 1.0
    unit: str = "model"  # whole-model unit vector, as published
    records: int | None = None  # K; None: one update per step (old + new per step)
    outliers: float | None = None  # drop losses beyond this many standard deviations
    augment: bool = False  # shift the old images by up to 2 px
    balanced: bool = True  # an even spread of vendors per batch (no padding); False: independent paths, as published
    baseline: bool = False  # records are path loss minus base loss (`ContinualLearner(baseline=True)`)
    mirrored: bool = False  # records are half path loss minus mirrored path loss (`ContinualLearner(mirrored=True)`)
    attribution: str = "rank"  # centred ranks (bounded influence per record); "zscore": V2 as published
    learn: str = "all"  # "partial": only the biases, the norms and the head (the kernels frozen)
    average: int | None = None  # validate an average of the weights over about this many steps (see ContinualRun)
    eval_every: int = 500
    eval_samples: int = 2000  # old-class validation images at each validation (the summary uses all of them)
    log_every: int = 50  # learning accuracy is logged as the mean over this many steps
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    log: str | None = None
    save: str | None = None
    checkpoint_every: int = 1000
    resume: bool = False

    def validate(self) -> None:
        """One-line errors naming the argument, before any data is loaded."""
        from .experiment import EXPERIMENTS

        checks.known("experiment", self.experiment, EXPERIMENTS)
        if self.steps < 1 or self.old_per_step < 0 or self.new_per_step < 0 or self.old_per_step + self.new_per_step < 2:
            raise checks.fail("need steps >= 1 and at least 2 images per step", "steps")
        checks.one_of("attribution", self.attribution, ATTRIBUTIONS)
        checks.one_of("unit", self.unit, checks.UNITS)
        checks.one_of("learn", self.learn, LEARN)
        if self.baseline and self.mirrored:
            raise checks.fail("baseline and mirrored are two references for a path's loss: choose one",
                              "baseline", "mirrored")
        if self.lr_end is not None and not self.lr_end > 0:
            raise checks.fail(f"lr_end must be positive, got {self.lr_end!r}", "lr_end")
        if self.lr_hold < 0:
            raise checks.fail(f"lr_hold must be >= 0, got {self.lr_hold!r}", "lr_hold")
        for name in ("eval_every", "log_every", "checkpoint_every", "eval_samples"):
            checks.at_least(name, getattr(self, name), 1)
        if self.average is not None:
            checks.at_least("average", self.average, 2)
        if self.records is not None:  # an update standardizes its losses: it needs two
            checks.at_least("records", self.records, 2)
        if self.resume and not self.save:
            raise checks.fail("resume needs save, the run's checkpoint to continue from", "resume", "save")

    def resume_differences(self, saved: dict[str, Any]) -> list[str]:
        """The learning settings in which this config differs from a saved one, in words."""
        mine = asdict(self)
        out = []
        for name in LEARNING_FIELDS:
            old, new = saved.get(name, SAVED_BEFORE.get(name)), mine[name]
            if isinstance(new, tuple):
                new = list(new)
            if old != new:
                out.append(f"{name}={old!r} (now {new!r})")
        return out


def scheduled_rate(config: ContinualConfig, step: int) -> float:
    """The learning rate of `step`: lr for the first lr_hold steps, then geometric decay to lr_end at the last.

    A pure function of the step, so a resumed run follows the same schedule.
    Large steps learn the new class quickly; once it is learned, smaller ones
    add less noise to what the model already knew (each update moves the
    weights by exactly lr, whatever the records say).
    """
    if config.lr_end is None or step < config.lr_hold:
        return config.lr
    span = max(config.steps - config.lr_hold, 1)
    return config.lr * (config.lr_end / config.lr) ** (min(step - config.lr_hold, span) / span)
