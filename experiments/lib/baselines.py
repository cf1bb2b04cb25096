"""Backprop baselines: the market's CNN, data and batches, trained with SGD or Adam.

Everything but the training algorithm is shared with `training.Trainer`: the
model is `models.beautiful_mnist(1)` built from the same seed (so its initial
weights equal the market's base weights), the data come from
`data.load_data`, the examples of step t from `training.batch_indices(seed, t)`,
test accuracy from `training.accuracy`, and the same hooks (progress bar, JSON
log, MLflow) receive the same metrics under the same names.

    summary = train_backprop(BackpropConfig(algorithm="sgd", lr=3e-3, norm="batch", steps=500))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from marketplace import data
from marketplace.data import DATASETS
from marketplace.errors import MarketplaceError
from marketplace.machine import resolve_device
from marketplace.models import beautiful_mnist
from marketplace.training import Hook, StepRate, accuracy, finished
from marketplace.training import loop  # loop.batch_indices looked up at call time: a test spies on it

BACKPROP_ALGORITHMS = ("sgd", "adam")
DEFAULT_BACKPROP_LR = {"sgd": 3e-3, "adam": 1e-3}


@dataclass
class BackpropConfig:
    """Settings of a backprop run; the names match `TrainConfig` where the meaning does."""

    dataset: str = "mnist"
    algorithm: str = "sgd"  # sgd or adam
    norm: str = "batch"  # batch (the original backprop CNN) or instance (the market's CNN)
    vendors: tuple[int, ...] = ()  # no market: one model
    batch: int = 128
    lr: float | None = None  # None: DEFAULT_BACKPROP_LR[algorithm]
    momentum: float = 0.0  # sgd only; the articles' baseline is plain SGD
    steps: int | None = None
    max_seconds: float | None = None
    seed: int = 0
    device: str = "auto"
    eval_every: int = 100
    eval_samples: int = 10_000
    log_every: int = 10
    data_dir: str | None = None

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise MarketplaceError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.algorithm not in BACKPROP_ALGORITHMS:
            raise MarketplaceError(f"unknown backprop algorithm {self.algorithm!r}; choose from "
                                   f"{', '.join(BACKPROP_ALGORITHMS)}")
        if self.norm not in ("batch", "instance"):
            raise MarketplaceError(f"backprop baselines take norm 'batch' or 'instance', got {self.norm!r}")
        if self.batch < 1:
            raise MarketplaceError(f"batch must be >= 1, got {self.batch}")
        if self.lr is not None and not self.lr > 0:
            raise MarketplaceError(f"lr must be > 0, got {self.lr}")
        if self.steps is None and self.max_seconds is None:
            raise MarketplaceError("give steps or max_seconds (or both) so the run knows when to stop")
        if self.eval_every < 1 or self.log_every < 1:
            raise MarketplaceError("eval_every and log_every must be >= 1")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_BACKPROP_LR[self.algorithm]


def build_model(config: BackpropConfig, device: torch.device) -> nn.Module:
    """The beautiful-MNIST CNN as one module, initialised from the seed exactly like the market."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        (model,) = beautiful_mnist(depth=1, norm=config.norm)
    return model.to(device)


def build_optimizer(config: BackpropConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.algorithm == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum)
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate)


@dataclass
class BackpropTrainer:
    """One backprop run over the same batches as the market `Trainer`, reporting to the same hooks."""

    config: BackpropConfig
    hooks: Sequence[Hook] = field(default_factory=tuple)

    def __post_init__(self):
        self.config.validate()
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.x_train, self.y_train = data.load_data(cfg.dataset, "train", cfg.data_dir, self.device)
        x_test, y_test = data.load_data(cfg.dataset, "test", cfg.data_dir, self.device)
        self.x_test, self.y_test = x_test[: cfg.eval_samples], y_test[: cfg.eval_samples]
        self.x_test_full, self.y_test_full = x_test, y_test
        self.model = build_model(cfg, self.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.steps = 0

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Test accuracy (percent) and loss; BatchNorm uses its running statistics here."""
        self.model.eval()
        try:
            return accuracy(self.model, x, y)
        finally:
            self.model.train()

    def run(self) -> dict[str, Any]:
        cfg = self.config
        for hook in self.hooks:
            hook.on_start(cfg, self.model, self.steps)
        self.model.train()
        start = time.perf_counter()
        elapsed = lambda: time.perf_counter() - start
        rate = StepRate(self.steps, 0.0)
        while not self._done(elapsed()):
            idx = loop.batch_indices(cfg.seed, self.steps, len(self.x_train), cfg.batch).to(self.device)
            x, y = self.x_train[idx], self.y_train[idx]
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            step, self.steps = self.steps, self.steps + 1
            metrics: dict[str, Any] = {}
            if (step + 1) % cfg.log_every == 0 or step == 0:  # the same steps as the market Trainer
                metrics = {"loss": loss.item(),
                           "train_accuracy": 100.0 * (logits.detach().argmax(1) == y).float().mean().item()}
            done = self._done(elapsed())
            if self.steps % cfg.eval_every == 0 and not done:  # the last one is on the full test set
                metrics["test_accuracy"], metrics["test_loss"] = self.evaluate(self.x_test, self.y_test)
            metrics = rate.stamp(metrics, self.steps, elapsed(), self.optimizer.param_groups[0]["lr"])
            for hook in self.hooks:
                hook.on_step(metrics)
        seconds = elapsed()
        test_acc, test_loss = self.evaluate(self.x_test_full, self.y_test_full)
        summary = {"test_accuracy": test_acc, "test_loss": test_loss, "steps": self.steps,
                   "seconds": round(seconds, 3), "skipped_steps": 0, "dataset": cfg.dataset, "model": "beautiful-mnist",
                   "algorithm": cfg.algorithm, "vendors": [], "batch": cfg.batch, "device": str(self.device)}
        for hook in self.hooks:
            hook.on_end(summary)
        return summary

    def _done(self, seconds: float) -> bool:
        return finished(self.config, self.steps, seconds)


def train_backprop(config: BackpropConfig, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Train with backprop and return the summary (the same keys as `training.train`)."""
    return BackpropTrainer(config, hooks).run()
