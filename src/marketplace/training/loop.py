"""Supervised training of a market on a named data set or a user's file, forward passes only.

`train` runs the loop of `Trainer` and reports to hooks. Batches and
vendors of step t are pure functions of (seed, t), so a run resumed from a
checkpoint is the same run as one never interrupted.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import data
from ..functional import path_losses
from ..machine import resolve_device
from ..market import Market
from ..errors import MarketplaceError
from ..models import build_model, canonical_source, is_factory_source
from ..norms import norm_layer
from ..optim import OPTIMIZERS, ForwardGradient, MarketOptimizerProtocol, TorchMarketOptimizer
from ..rng import derive_seeds
from ..vendors import BATCH_STREAM, Vendors
from .checkpoint import Checkpoint, CheckpointError, check_resume, load_checkpoint, save_checkpoint
from .cheap_vendors import market_vendors
from .config import DEFAULT_LR, TrainConfig
from .hooks import Hook, StepRate
from .schedules import Schedule, build_scheduler, build_torch_optimizer

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


def load_training_data(config: TrainConfig, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y of one split: from `config.data` (a user's file) if given, else the named data set."""
    if config.data:
        return data.load_file(config.data).inputs(split, device)
    return data.load_data(config.dataset, split, config.data_dir, device)


def data_shape(config: TrainConfig) -> tuple[tuple[int, ...], int]:
    """(shape of one example, number of classes) of the run's data, to build the model before loading it."""
    if config.data:
        file = data.load_file(config.data)
        return file.input_shape, file.classes
    return data.input_shape(config.dataset), data.num_classes(config.dataset)


def build_market(config: TrainConfig, device: torch.device, input_shape: Sequence[int] = (1, 28, 28),
                 classes: int = 10) -> Market:
    """`config.model` split into len(vendors) specs for inputs of `input_shape`, initialised from the seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        specs = build_model(config.model, len(config.vendors), input_shape, classes, config.split,
                            norm=norm_layer(config.norm, config.batch))
    if len(specs) != len(config.vendors):
        raise MarketplaceError(f"--vendors has {len(config.vendors)} counts but --model {config.model} has "
                               f"{len(specs)} specs: give one count per spec")
    sampling = list(config.sampling) if config.sampling else 0
    return Market(specs, list(market_vendors(config, specs, input_shape)), sampling).to(device)


def model_record(config: TrainConfig, input_shape: Sequence[int], classes: int) -> dict[str, Any]:
    """What a checkpoint keeps to rebuild the model: where it came from and what it reads."""
    source = canonical_source(config.model) if is_factory_source(config.model) else config.model
    return {"source": source, "split": list(config.split) if config.split else None,
            "input_shape": list(input_shape), "classes": classes}


def market_from_checkpoint(ckpt: Checkpoint, path: str, device: torch.device) -> Market:
    """The market a `marketplace train` checkpoint was saved from, with its weights.

    A preset or a user's factory is rebuilt from the checkpoint's model record
    (checkpoints without one hold the beautiful-MNIST CNN).
    """
    saved = ckpt.meta.get("config", {})
    record = ckpt.meta.get("model") or {}
    split = record.get("split", saved.get("split"))
    config = TrainConfig(vendors=tuple(saved.get("vendors", (4, 4, 4))), sampling=saved.get("sampling"),
                         norm=saved.get("norm", "instance"), batch=saved.get("batch", 128),
                         model=record.get("source", saved.get("model", "beautiful-mnist")),
                         split=tuple(split) if split else None, cheap_vendors=saved.get("cheap_vendors", 0.0))
    market = build_market(config, device, tuple(record.get("input_shape", (1, 28, 28))), record.get("classes", 10))
    try:
        market.load_state_dict(ckpt.model)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not hold the {config.model} market it names: "
                              f"{str(e).splitlines()[0]}") from e
    return market


def build_torch_v2(config: TrainConfig, market: Market, lr: float) -> TorchMarketOptimizer:
    """V2's estimate under the configured torch optimizer and lr schedule."""
    optimizer = build_torch_optimizer(config.optimizer, market, lr, config.momentum, config.weight_decay,
                                      config.nesterov)
    schedule = Schedule(config.schedule, config.horizon(), config.warmup, config.decay, config.min_lr)
    estimator = ForwardGradient(market, optimizer, probe_scale=config.probe_scale, probe_width=config.probe_width,
                                seed=config.seed, attribution=config.attribution, direction=config.direction,
                                per_spec=config.per_spec, antithetic=config.antithetic,
                                cache_deltas=config.cache_deltas)
    return TorchMarketOptimizer(estimator, optimizer, build_scheduler(optimizer, schedule), config.clip,
                                config.on_nonfinite)


def build_optimizer(config: TrainConfig, market: Market) -> MarketOptimizerProtocol:
    """V1, V2 or AdaptiveV2; v2 with torch options goes through torch.optim (plain V2 is the same as sgd + constant)."""
    lr = config.lr if config.lr is not None else DEFAULT_LR[config.algorithm]
    if config.algorithm == "v2" and config.torch_options_used():
        return build_torch_v2(config, market, lr)
    common = dict(decay=config.decay, seed=config.seed, cache_deltas=config.cache_deltas,
                  on_nonfinite=config.on_nonfinite)
    if config.algorithm == "v1":
        return OPTIMIZERS["v1"](market, lr, **common)
    extra = dict(probe_scale=config.probe_scale, per_spec=config.per_spec)
    if config.algorithm == "adaptive":
        extra.update(meta_lr=config.meta_lr, rate_bounds=config.rate_bounds, rate_smoothing=config.rate_smoothing)
    return OPTIMIZERS[config.algorithm](market, lr, **extra, **common)


def finished(config, steps: int, seconds: float) -> bool:
    """Whether a run with `config.steps` and/or `config.max_seconds` is over."""
    if config.steps is not None and steps >= config.steps:
        return True
    return config.max_seconds is not None and seconds >= config.max_seconds


def leader_metrics(losses: torch.Tensor, paths: torch.Tensor, products: torch.Tensor,
                   y: torch.Tensor) -> dict[str, float]:
    """Loss and accuracy of the leader path (the base weights) on the training batch, best and mean loss."""
    leader = (paths == 0).all(dim=1).nonzero()
    i = int(leader[0, 0]) if len(leader) else int(torch.argmin(losses))
    return {"loss": float(losses[i]), "train_accuracy": 100.0 * float((products[i].argmax(1) == y).float().mean()),
            "best_loss": float(losses.min()), "mean_loss": float(losses.mean())}


@dataclass
class Trainer:
    """One training run: data, market, optimizer and the loop over steps."""

    config: TrainConfig
    hooks: Sequence[Hook] = field(default_factory=tuple)

    def __post_init__(self):
        self.config.validate()
        cfg = self.config
        self.device = resolve_device(cfg.device)
        shape, classes = data_shape(cfg)  # the model's mistakes before the data's (a download, say)
        self.model_record = model_record(cfg, shape, classes)
        self.market = build_market(cfg, self.device, shape, classes)
        self.x_train, self.y_train = load_training_data(cfg, "train", self.device)
        x_test, y_test = load_training_data(cfg, "test", self.device)
        self.x_test, self.y_test = x_test[: cfg.eval_samples], y_test[: cfg.eval_samples]
        self.x_test_full, self.y_test_full = x_test, y_test
        self.optimizer = build_optimizer(cfg, self.market)
        self.seconds_before = 0.0  # training time of earlier runs resumed from
        self.test_accuracy: float | None = None
        if cfg.resume and cfg.checkpoint and Path(cfg.checkpoint).exists():
            self.load(cfg.checkpoint)

    # -- checkpoints ---------------------------------------------------------

    def save(self, path: str, seconds: float) -> None:
        meta = {"config": dataclasses.asdict(self.config), "seconds": seconds,
                "test_accuracy": self.test_accuracy, "model": self.model_record}
        save_checkpoint(path, self.market.state_dict(), self.optimizer.state_dict(), meta)

    def load(self, path: str) -> None:
        ckpt = load_checkpoint(path)
        check_resume(path, ckpt, self.config)
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
        rate = StepRate(opt.steps, elapsed())
        while not self._done(elapsed()):
            idx = batch_indices(cfg.seed, opt.steps, len(self.x_train), cfg.batch).to(self.device)
            x, y = self.x_train[idx], self.y_train[idx]
            losses, paths, products = self.path_losses(x, y, opt.vendors)
            step = opt.steps
            metrics: dict[str, Any] = {}
            if (step + 1) % cfg.log_every == 0 or step == 0:
                metrics = leader_metrics(losses, paths, products, y)
            opt.step(losses, paths, closure=lambda v: self.path_losses(x, y, v)[:2])
            done = self._done(elapsed())
            if opt.steps % cfg.eval_every == 0 and not done:  # the last one is on the full test set
                self.test_accuracy, metrics["test_loss"] = accuracy(self.market, self.x_test, self.y_test)
                metrics["test_accuracy"] = self.test_accuracy
            metrics = rate.stamp(metrics, opt.steps, elapsed(), opt.lr[0])
            for hook in self.hooks:
                hook.on_step(metrics)
            if cfg.checkpoint and (opt.steps % cfg.checkpoint_every == 0 or done):
                self.save(cfg.checkpoint, elapsed())
        seconds = elapsed()
        test_acc, test_loss = accuracy(self.market, self.x_test_full, self.y_test_full)
        self.test_accuracy = test_acc
        if cfg.checkpoint:
            self.save(cfg.checkpoint, seconds)
        summary = {"test_accuracy": test_acc, "test_loss": test_loss, "steps": opt.steps,
                   "seconds": round(seconds, 3), "skipped_steps": opt.skipped,
                   "dataset": cfg.data or cfg.dataset, "model": cfg.model, "algorithm": cfg.algorithm,
                   "vendors": list(self.market.vendor_counts), "batch": cfg.batch, "device": str(self.device)}
        for hook in self.hooks:
            hook.on_end(summary)
        return summary

    def _done(self, seconds: float) -> bool:
        return finished(self.config, self.optimizer.steps, seconds)


def train(config: TrainConfig, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Train and return the summary (test_accuracy in percent, steps, seconds, ...)."""
    return Trainer(config, hooks).run()
