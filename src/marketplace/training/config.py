"""The settings of a supervised training run, logged whole with each checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..data import DATASETS
from ..errors import MarketplaceError
from ..norms import NORM_NAMES
from ..optim import OPTIMIZERS

# Defaults for the small CPU market (4x4x4, batch 128), from 400-step sweeps on MNIST (README,
# "Choosing the rates"); the published 16-vendor setting is lr 0.1, probe scale 0.1.
DEFAULT_LR = {"v1": 0.003, "v2": 0.15, "adaptive": 0.15}


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    algorithm: str = "v2"
    vendors: tuple[int, ...] = (4, 4, 4)
    sampling: tuple[int, ...] | None = None  # None: full sampling everywhere
    batch: int = 128
    lr: float | None = None  # None: DEFAULT_LR[algorithm]
    decay: float = 1e-5
    probe_scale: float = 0.03
    per_spec: bool = True
    meta_lr: float = 0.1
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

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise MarketplaceError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.algorithm not in OPTIMIZERS:
            raise MarketplaceError(f"unknown algorithm {self.algorithm!r}; choose from {', '.join(OPTIMIZERS)}")
        if not 1 <= len(self.vendors) <= 3:
            raise MarketplaceError(f"--vendors needs 1 to 3 counts (one per spec), got {list(self.vendors)}")
        if any(v < 1 for v in self.vendors):
            raise MarketplaceError(f"every spec needs at least 1 vendor, got {list(self.vendors)}")
        if self.batch < 1:
            raise MarketplaceError(f"--batch must be >= 1, got {self.batch}")
        if self.steps is None and self.max_seconds is None:
            raise MarketplaceError("give --steps or --max-seconds (or both) so the run knows when to stop")
        if self.resume and not self.checkpoint:
            raise MarketplaceError("--resume needs --checkpoint PATH")
        if self.norm not in NORM_NAMES:
            raise MarketplaceError(f"unknown norm {self.norm!r}; choose from {', '.join(NORM_NAMES)}")
        if min(self.eval_every, self.log_every, self.checkpoint_every, self.eval_samples) < 1:
            raise MarketplaceError("--eval-every, --log-every, --checkpoint-every and --eval-samples must be >= 1")
        for name in ("decay", "probe_scale", "meta_lr") + (("lr",) if self.lr is not None else ()):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name != "decay" and value == 0):
                raise MarketplaceError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")
        if self.decay >= 1:
            raise MarketplaceError(f"--decay must be below 1, got {self.decay}")
