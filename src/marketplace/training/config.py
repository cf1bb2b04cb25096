"""The settings of a supervised training run, logged whole with each checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from .. import checks
from ..data import DATASET_NAMES
from ..defaults import DEFAULT_LR
from ..norms import NORM_NAMES
from ..functional import ATTRIBUTIONS
from ..optim import DIRECTIONS, OPTIMIZERS
from .schedules import OPTIMIZER_NAMES, SCHEDULE_NAMES

# What a resumed run must share with its checkpoint: the settings that shape the weights' path. The
# others (steps, max_seconds, evaluation, logging, the device, where data and checkpoints live) may
# change between the parts of one run; the lr schedule's horizon is checked too (resume_differences).
RESUME_FIXED = ("dataset", "data", "model", "split", "norm", "seed", "algorithm", "vendors", "sampling",
                "cheap_vendors", "batch", "lr", "decay", "probe_scale", "per_spec", "meta_lr", "rate_bounds",
                "rate_smoothing", "optimizer", "momentum", "nesterov", "weight_decay", "schedule", "warmup",
                "min_lr", "probe_width", "attribution", "direction", "antithetic", "clip", "rank", "average")


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    algorithm: str = "v2"
    vendors: tuple[int, ...] = (4, 4, 4)
    sampling: tuple[int, ...] | None = None  # None: full sampling everywhere
    batch: int = 128
    lr: float | tuple[float, ...] | None = None  # one, or one per spec; None: DEFAULT_LR (build.default_rates)
    decay: float = 1e-5
    probe_scale: float = 0.03
    per_spec: bool = True
    meta_lr: float = 0.1
    rate_bounds: tuple[float, float] | None = None  # adaptive: the rate stays in [lo, hi] x its initial value
    rate_smoothing: float = 0.0  # adaptive: the kept rate is an EMA of the chosen ones with this beta
    steps: int | None = None
    max_seconds: float | None = None
    seed: int = 0
    device: str = "auto"
    eval_every: int = 100
    eval_samples: int = 2_000
    log_every: int = 10
    checkpoint: str | None = None
    checkpoint_every: int = 500
    resume: bool = False
    on_nonfinite: str = "raise"
    cache_deltas: bool = True
    data_dir: str | None = None
    norm: str = "instance"  # see norms.py; "batch" is refused by the market
    # -- the model and the data --
    model: str = "beautiful-mnist"  # a preset of models.PRESETS, or MODULE:FACTORY / FILE.py:FACTORY
    split: tuple[int, ...] | None = None  # where to cut a factory's nn.Sequential into specs
    data: str | None = None  # a .npz/.pt file with x_train, y_train, x_test, y_test; replaces `dataset`
    # -- the estimator and its optimizer --
    cheap_vendors: float = 0.0  # raise vendor counts where a spec is cheap, within this FLOP slack (cheap_vendors.py)
    # v2 through torch.optim (schedules.py, optim/forward_gradient.py); sgd + constant is V2 itself
    optimizer: str = "sgd"  # sgd, momentum, adam, adamw
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant, cosine, step, warmup-cosine
    schedule_steps: int | None = None  # the schedule's horizon; None: steps
    warmup: int = 0
    min_lr: float = 0.0  # the cosine's final lr, as a fraction of lr
    probe_width: float | None = None  # a fixed probe width instead of lr * probe_scale
    attribution: str = "zscore"  # zscore or rank
    direction: str = "unit"  # unit or raw
    antithetic: bool = False
    clip: float | None = None
    rank: int = 0  # 0: dense vendors; r: rank-r vendors of Linear/Conv2d/Embedding weights (lowrank.py)
    average: int | None = None  # evaluate and save the weights averaged over about this many steps (averaging.py)

    def torch_options_used(self) -> bool:
        """Whether this v2 run needs the torch.optim path (anything but plain SGD on V2's estimate)."""
        defaults = TrainConfig.__dataclass_fields__
        names = ("optimizer", "weight_decay", "schedule", "probe_width", "attribution", "direction",
                 "antithetic", "clip")
        return any(getattr(self, n) != defaults[n].default for n in names)

    def horizon(self) -> int | None:
        """The step at which the lr schedule ends: schedule_steps, else steps."""
        return self.schedule_steps if self.schedule_steps is not None else self.steps

    def clock_horizon(self) -> float | None:
        """The seconds over which the lr schedule runs when no step count ends it: max_seconds, else None."""
        return self.max_seconds if self.schedule != "constant" and self.horizon() is None else None

    def resume_differences(self, saved: dict) -> list[str]:
        """How this run's settings differ from `saved`, a checkpoint's config: ["name=saved, not ours", ...].

        A checkpoint restores the optimizer's state (its rates included), so a setting that differs would be
        silently overridden or make the resumed run another run; settings an older checkpoint lacks pass.
        """
        plain = lambda v: json.loads(json.dumps(v))  # tuples as lists, as the checkpoint stores them
        out = []
        for name in RESUME_FIXED:
            if name not in saved:
                continue
            mine, theirs = getattr(self, name), saved[name]
            if name == "lr":  # None is the algorithm's default
                mine = DEFAULT_LR[self.algorithm] if mine is None else mine
                theirs = DEFAULT_LR.get(saved.get("algorithm", self.algorithm)) if theirs is None else theirs
            if plain(mine) != plain(theirs):
                out.append(f"{name}={theirs!r}, not {mine!r}")
        if self.schedule != "constant" and saved.get("schedule") == self.schedule:
            theirs, mine = _schedule_span(saved), _schedule_span(dataclasses.asdict(self))
            if theirs != mine:
                steps = saved.get("schedule_steps") or saved.get("steps")
                how = (f"schedule_steps={steps} continues it" if steps is not None
                       else f"max_seconds={saved.get('max_seconds'):g} without steps continues it")
                out.append(f"a {self.schedule} schedule over {theirs}, not {mine} ({how})")
        return out

    def validate(self) -> None:
        """One-line errors naming the field (the CLI names its flag), before any data is loaded."""
        checks.known("dataset", self.dataset, DATASET_NAMES)
        checks.known("algorithm", self.algorithm, OPTIMIZERS)
        if not self.vendors:
            raise checks.fail("vendors needs one count per spec, e.g. 4,4,4", "vendors")
        if any(v < 1 for v in self.vendors):
            raise checks.fail(f"every spec needs at least 1 vendor, got {list(self.vendors)}", "vendors")
        checks.at_least("batch", self.batch, 1)
        if self.steps is None and self.max_seconds is None:
            raise checks.fail("give steps or max_seconds (or both) so the run knows when to stop",
                              "steps", "max_seconds")
        if self.steps is not None:
            checks.at_least("steps", self.steps, 1)
        if self.max_seconds is not None:
            checks.positive("max_seconds", self.max_seconds)
        if self.resume and not self.checkpoint:
            raise checks.fail("resume needs a checkpoint path", "resume", "checkpoint")
        checks.known("norm", self.norm, NORM_NAMES)
        if self.average is not None:
            checks.at_least("average", self.average, 2)
        for name in ("eval_every", "log_every", "checkpoint_every", "eval_samples"):
            checks.at_least(name, getattr(self, name), 1)
        if not self.model:
            raise checks.fail("model needs a preset name or MODULE:FACTORY", "model")
        if self.split is not None and any(i < 1 for i in self.split):
            raise checks.fail(f"split takes layer indices >= 1, got {list(self.split)}", "split")
        checks.positive("decay", self.decay, zero=True)
        for name in ("probe_scale", "meta_lr"):
            checks.positive(name, getattr(self, name))
        self._validate_lr()
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 0:
            raise checks.fail(f"rank must be an integer >= 0 (0 = dense vendors), got {self.rank}", "rank")
        if self.decay >= 1:
            raise checks.fail(f"decay must be below 1, got {self.decay}", "decay")
        self._validate_adaptive_options()
        self._validate_torch_options()

    def _validate_lr(self) -> None:
        if self.lr is None:
            return
        rates = self.lr if isinstance(self.lr, (tuple, list)) else (self.lr,)
        for rate in rates:
            checks.positive("lr", rate)
        if len(rates) > 1 and len(rates) != len(self.vendors):
            raise checks.fail(f"lr takes one rate or one per spec: {len(rates)} rates for {len(self.vendors)} specs",
                              "lr", "vendors")

    def rates(self) -> float | list[float]:
        """The learning rate the optimizer gets: the algorithm's default, one rate, or one per spec."""
        if self.lr is None:
            return DEFAULT_LR[self.algorithm]
        if isinstance(self.lr, (tuple, list)):
            return float(self.lr[0]) if len(self.lr) == 1 else [float(r) for r in self.lr]
        return float(self.lr)

    def _validate_adaptive_options(self) -> None:
        if self.algorithm != "adaptive" and (self.rate_bounds is not None or self.rate_smoothing != 0):
            raise checks.fail("rate_bounds and rate_smoothing apply to algorithm adaptive only",
                              "rate_bounds", "rate_smoothing", "algorithm")
        if self.rate_bounds is not None:
            b = self.rate_bounds
            if len(b) != 2 or not all(math.isfinite(v) for v in b) or not 0 < b[0] <= 1 <= b[1]:
                raise checks.fail(f"rate_bounds takes LO,HI with 0 < LO <= 1 <= HI (times the initial lr), "
                                  f"got {','.join(str(v) for v in b)}", "rate_bounds", "lr")
        checks.fraction("rate_smoothing", self.rate_smoothing)

    def _validate_torch_options(self) -> None:
        checks.known("optimizer", self.optimizer, OPTIMIZER_NAMES)
        checks.known("schedule", self.schedule, SCHEDULE_NAMES)
        checks.known("attribution", self.attribution, ATTRIBUTIONS)
        checks.known("direction", self.direction, DIRECTIONS)
        if self.algorithm != "v2" and self.torch_options_used():
            raise checks.fail("optimizer, schedule and the estimator options apply to algorithm v2 only",
                              "optimizer", "schedule", "algorithm")
        if not (math.isfinite(self.cheap_vendors) and 0 <= self.cheap_vendors <= 10):
            raise checks.fail(f"cheap_vendors is a FLOP slack in [0, 10] (0.05 = 5%), got {self.cheap_vendors}",
                              "cheap_vendors")
        checks.fraction("momentum", self.momentum)
        if not 0 <= self.min_lr <= 1:
            raise checks.fail(f"min_lr must be a fraction of lr in [0, 1], got {self.min_lr}", "min_lr", "lr")
        checks.positive("weight_decay", self.weight_decay, zero=True)
        for name in ("probe_width", "clip"):
            if getattr(self, name) is not None:
                checks.positive(name, getattr(self, name))
        if self.warmup < 0 or (self.schedule_steps is not None and self.schedule_steps < 1):
            raise checks.fail("warmup must be >= 0 and schedule_steps >= 1", "warmup", "schedule_steps")
        if self.schedule == "warmup-cosine" and self.horizon() is None:
            raise checks.fail("schedule warmup-cosine counts its warmup in steps: give steps or schedule_steps "
                              "(a cosine without warmup can end on the clock)", "schedule", "steps", "schedule_steps")
        if self.schedule == "warmup-cosine" and not 0 < self.warmup < self.horizon():
            raise checks.fail(f"schedule warmup-cosine needs 0 < warmup < the horizon "
                              f"({self.horizon()} steps), got {self.warmup}", "schedule", "warmup")


def _schedule_span(config: dict) -> str:
    """What a schedule of this config (a checkpoint's, as a dict) ends on: "2600 steps" or "600 s on the clock"."""
    steps = config.get("schedule_steps") or config.get("steps")
    return f"{steps} steps" if steps is not None else f"{config.get('max_seconds'):g} s on the clock"
