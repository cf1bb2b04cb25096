"""Supervised training of a market on MNIST or Fashion-MNIST, forward passes only.

`TrainConfig` holds every setting (logged whole with each checkpoint);
`train` runs the loop and reports to hooks. Batches and vendors of step t
are pure functions of (seed, t), so a run resumed from a checkpoint is the
same run as one never interrupted.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import DATASETS, load_split
from .errors import MarketplaceError
from .functional import path_losses
from .market import Market
from .models import beautiful_mnist
from .norms import NORM_NAMES, norm_layer
from .optim import OPTIMIZERS, MarketOptimizer
from .rng import derive_seeds
from .vendors import BATCH_STREAM, Vendors

# Defaults for the small CPU market (4x4x4, batch 128), from 400-step sweeps on MNIST (README,
# "Choosing the rates"); the published 16-vendor setting is lr 0.1, probe scale 0.1.
DEFAULT_LR = {"v1": 0.003, "v2": 0.15, "adaptive": 0.15}
MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics, used for both data sets


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise MarketplaceError(f"unknown device {name!r}: {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MarketplaceError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device


def load_data(name: str, split: str, data_dir: str | None, device: torch.device):
    """Images as normalised float32 [N, 1, 28, 28] and labels int64 [N], on the device."""
    images, labels = load_split(name, split, data_dir)
    x = (images.to(device=device, dtype=torch.float32) / 255.0 - MEAN) / STD
    return x.unsqueeze(1), labels.to(device)


def batch_indices(seed: int, step: int, n: int, batch: int) -> torch.Tensor:
    """The examples of step `step`: drawn with replacement, a pure function of (seed, step)."""
    g = torch.Generator().manual_seed(int(derive_seeds(seed, BATCH_STREAM, step)[0]) & (2**63 - 1))
    return torch.randint(0, n, (batch,), generator=g)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> tuple[float, float]:
    """Accuracy (percent) and mean cross-entropy of `model` on (x, y)."""
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch):
        logits = model(x[i : i + batch]).float()
        correct += int((logits.argmax(1) == y[i : i + batch]).sum())
        loss += float(torch.nn.functional.cross_entropy(logits, y[i : i + batch], reduction="sum"))
    return 100.0 * correct / len(x), loss / len(x)


def build_market(config: TrainConfig, device: torch.device) -> Market:
    """The beautiful-MNIST CNN split into len(vendors) specs, initialised from the seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        specs = beautiful_mnist(depth=len(config.vendors), norm=norm_layer(config.norm, config.batch))
    sampling = list(config.sampling) if config.sampling else 0
    return Market(specs, list(config.vendors), sampling).to(device)


def build_optimizer(config: TrainConfig, market: Market) -> MarketOptimizer:
    lr = config.lr if config.lr is not None else DEFAULT_LR[config.algorithm]
    common = dict(decay=config.decay, seed=config.seed, cache_deltas=config.cache_deltas,
                  on_nonfinite=config.on_nonfinite)
    if config.algorithm == "v1":
        return OPTIMIZERS["v1"](market, lr, **common)
    extra = dict(probe_scale=config.probe_scale, per_spec=config.per_spec)
    if config.algorithm == "adaptive":
        extra["meta_lr"] = config.meta_lr
    return OPTIMIZERS[config.algorithm](market, lr, **extra, **common)


class Hook:
    """Receives training events; subclasses override what they need."""

    def on_start(self, config: TrainConfig, market: Market, start_step: int) -> None: ...
    def on_step(self, metrics: dict[str, Any]) -> None: ...
    def on_end(self, summary: dict[str, Any]) -> None: ...


@dataclass
class Trainer:
    """One training run: data, market, optimizer and the loop over steps."""

    config: TrainConfig
    hooks: Sequence[Hook] = field(default_factory=tuple)

    def __post_init__(self):
        self.config.validate()
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.x_train, self.y_train = load_data(cfg.dataset, "train", cfg.data_dir, self.device)
        x_test, y_test = load_data(cfg.dataset, "test", cfg.data_dir, self.device)
        self.x_test, self.y_test = x_test[: cfg.eval_samples], y_test[: cfg.eval_samples]
        self.x_test_full, self.y_test_full = x_test, y_test
        self.market = build_market(cfg, self.device)
        self.optimizer = build_optimizer(cfg, self.market)
        self.seconds_before = 0.0  # training time of earlier runs resumed from
        self.test_accuracy: float | None = None
        if cfg.resume and cfg.checkpoint and Path(cfg.checkpoint).exists():
            self.load(cfg.checkpoint)

    # -- checkpoints ---------------------------------------------------------

    def save(self, path: str, seconds: float) -> None:
        meta = {"config": dataclasses.asdict(self.config), "seconds": seconds,
                "test_accuracy": self.test_accuracy}
        save_checkpoint(path, self.market.state_dict(), self.optimizer.state_dict(), meta)

    def load(self, path: str) -> None:
        ckpt = load_checkpoint(path)
        saved = ckpt.meta.get("config", {})
        for name in ("dataset", "seed", "algorithm"):
            if name in saved and saved[name] != getattr(self.config, name):
                raise CheckpointError(f"{path} was trained with {name}={saved[name]!r}, not "
                                      f"{getattr(self.config, name)!r}: resume with the same {name}")
        try:
            self.market.load_state_dict(ckpt.model)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{path} holds a different model than --vendors {list(self.config.vendors)}: {first}") from e
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.seconds_before = float(ckpt.meta.get("seconds", 0.0))
        self.test_accuracy = ckpt.meta.get("test_accuracy")

    # -- the loop ------------------------------------------------------------

    def path_losses(self, x: torch.Tensor, y: torch.Tensor, vendors: Vendors):
        out = self.market.evaluate(x, vendors)
        return path_losses(out.products, y), out.paths, out.products

    def run(self) -> dict[str, Any]:
        cfg, opt = self.config, self.optimizer
        for hook in self.hooks:
            hook.on_start(cfg, self.market, opt.steps)
        start = time.perf_counter()
        elapsed = lambda: self.seconds_before + time.perf_counter() - start
        last_log_step, last_log_time = opt.steps, elapsed()
        while not self._done(elapsed()):
            idx = batch_indices(cfg.seed, opt.steps, len(self.x_train), cfg.batch).to(self.device)
            x, y = self.x_train[idx], self.y_train[idx]
            losses, paths, products = self.path_losses(x, y, opt.vendors)
            step = opt.steps
            metrics: dict[str, Any] = {}
            if (step + 1) % cfg.log_every == 0 or step == 0:
                metrics = self._train_metrics(losses, paths, products, y)
            opt.step(losses, paths, closure=lambda v: self.path_losses(x, y, v)[:2])
            done = self._done(elapsed())
            if opt.steps % cfg.eval_every == 0 and not done:  # the last one is on the full test set
                self.test_accuracy, metrics["test_loss"] = accuracy(self.market, self.x_test, self.y_test)
                metrics["test_accuracy"] = self.test_accuracy
            if metrics:
                now = elapsed()
                metrics.update(step=opt.steps, seconds=now, lr=opt.lr[0],
                               steps_per_second=(opt.steps - last_log_step) / max(now - last_log_time, 1e-9))
                last_log_step, last_log_time = opt.steps, now
            for hook in self.hooks:
                hook.on_step(metrics or {"step": opt.steps, "seconds": elapsed()})
            if cfg.checkpoint and (opt.steps % cfg.checkpoint_every == 0 or done):
                self.save(cfg.checkpoint, elapsed())
        seconds = elapsed()
        test_acc, test_loss = accuracy(self.market, self.x_test_full, self.y_test_full)
        self.test_accuracy = test_acc
        if cfg.checkpoint:
            self.save(cfg.checkpoint, seconds)
        summary = {"test_accuracy": test_acc, "test_loss": test_loss, "steps": opt.steps,
                   "seconds": round(seconds, 3), "skipped_steps": opt.skipped,
                   "dataset": cfg.dataset, "algorithm": cfg.algorithm,
                   "vendors": list(cfg.vendors), "batch": cfg.batch, "device": str(self.device)}
        for hook in self.hooks:
            hook.on_end(summary)
        return summary

    def _done(self, seconds: float) -> bool:
        cfg = self.config
        if cfg.steps is not None and self.optimizer.steps >= cfg.steps:
            return True
        return cfg.max_seconds is not None and seconds >= cfg.max_seconds

    def _train_metrics(self, losses, paths, products, y) -> dict[str, float]:
        """Loss and accuracy of the leader path (the base weights) on the training batch."""
        leader = (paths == 0).all(dim=1).nonzero()
        i = int(leader[0, 0]) if len(leader) else int(torch.argmin(losses))
        return {"loss": float(losses[i]), "train_accuracy": 100.0 * float((products[i].argmax(1) == y).float().mean()),
                "best_loss": float(losses.min()), "mean_loss": float(losses.mean())}


def train(config: TrainConfig, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Train and return the summary (test_accuracy in percent, steps, seconds, ...)."""
    return Trainer(config, hooks).run()
