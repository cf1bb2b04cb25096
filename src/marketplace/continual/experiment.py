"""One continual-learning run (docs/algorithm.md section 7): serve, learn from the labels, validate.

Each step serves `old_per_step` old and `new_per_step` new images, every one
along its own random path, with its label known at once; the learner
reconciles the step's records (K = the batch) as V2 with a whole-model unit
vector and a fixed learning rate. Samples come from the whole training
stream; `few_shot` reproduces the published runs, whose indices were bounded
by the subset size and so drew from the first 240 old and first 16 new
images only. The published experiments are `dress` and `nine`, one module
each.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import MarketplaceError
from ..machine import machine_name, resolve_device
from ..market import Market
from ..optim import V2
from ..rng import derive_seeds
from ..training import Hook, accuracy, save_checkpoint
from . import dress, nine
from .learner import ContinualLearner
from .losses import per_example_cross_entropy
from .pretrain import load_market
from .stream import STREAM_AUGMENT, STREAM_NEW, STREAM_OLD, ContinualData, shift_augment, step_indices

EXPERIMENTS = {module.NAME: module for module in (dress, nine)}


def experiment_data(experiment: str, data_dir: str | None, device: torch.device) -> ContinualData:
    """The old and new data of `dress` (digits + dress as class 10) or `nine` (0-8 + 9)."""
    if experiment not in EXPERIMENTS:
        raise MarketplaceError(f"unknown experiment {experiment!r}; choose from {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[experiment].load(data_dir, device)


@dataclass
class ContinualConfig:
    experiment: str = "dress"
    checkpoint: str = "runs/digits.safetensors"
    steps: int = 1000
    old_per_step: int = 240
    new_per_step: int = 16
    few_shot: bool = False  # the published sampling: the first 240 old and first 16 new images only
    vendors: tuple[int, ...] = (4, 4, 4)  # the serving market (the checkpoint's spec split must match)
    lr: float = 1e-2
    probe_scale: float = 1.0
    unit: str = "model"  # whole-model unit vector, as published
    records: int | None = None  # K; None: one update per step (old + new per step)
    outliers: float | None = None  # drop losses beyond this many standard deviations
    augment: bool = False  # shift the old images by up to 2 px
    balanced: bool = False
    baseline: bool = False  # records are path loss minus base loss (`ContinualLearner(baseline=True)`)
    eval_every: int = 100
    eval_samples: int = 2000  # old-class validation images in the log (the summary uses all of them)
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    log: str | None = None
    save: str | None = None

    def validate(self) -> None:
        if self.experiment not in EXPERIMENTS:
            raise MarketplaceError(f"unknown experiment {self.experiment!r}; choose from {', '.join(EXPERIMENTS)}")
        if self.steps < 1 or self.old_per_step < 0 or self.new_per_step < 0 or self.old_per_step + self.new_per_step < 2:
            raise MarketplaceError("need --steps >= 1 and at least 2 images per step")
        if self.unit not in ("spec", "model"):
            raise MarketplaceError(f"--unit must be 'spec' or 'model', got {self.unit!r}")
        if self.eval_every < 1:
            raise MarketplaceError("--eval-every must be >= 1")


@torch.no_grad()
def validate(market: Market, data: ContinualData, old_samples: int | None = None) -> dict[str, float]:
    """Validation accuracy (percent) and loss of the base weights on old and new classes."""
    n = len(data.val_old_x) if old_samples is None else min(old_samples, len(data.val_old_x))
    old_acc, old_loss = accuracy(market, data.val_old_x[:n], data.val_old_y[:n])
    new_acc, new_loss = accuracy(market, data.val_new_x, data.val_new_y)
    return {"val_old_accuracy": old_acc, "val_old_loss": old_loss,
            "val_new_accuracy": new_acc, "val_new_loss": new_loss}


class ContinualRun:
    """One run of an experiment: data, market, learner and the loop over steps."""

    def __init__(self, config: ContinualConfig, hooks: Sequence[Hook] = ()):
        config.validate()
        self.config, self.hooks = config, list(hooks)
        self.device = resolve_device(config.device)
        self.data = experiment_data(config.experiment, config.data_dir, self.device)
        self.market, self.meta = load_market(config.checkpoint, self.device, self.data.classes)
        if tuple(self.market.vendor_counts) != tuple(config.vendors):
            self.market = Market(list(self.market.specs), list(config.vendors)).to(self.device)
        optimizer = V2(self.market, lr=config.lr, probe_scale=config.probe_scale, per_spec=config.unit == "spec",
                       decay=0.0, seed=config.seed)
        records = config.records or config.old_per_step + config.new_per_step
        self.learner = ContinualLearner(optimizer, records=records, outliers=config.outliers,
                                        path_seed=config.seed, balanced=config.balanced,
                                        baseline=config.baseline)
        self.augmenter = torch.Generator().manual_seed(int(derive_seeds(config.seed, STREAM_AUGMENT)[0]) & (2**63 - 1))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's images: old first, then new, drawn from the whole streams (or the first few)."""
        cfg, d = self.config, self.data
        old_pool = min(cfg.old_per_step, len(d.old_x)) if cfg.few_shot else len(d.old_x)
        new_pool = min(cfg.new_per_step, len(d.new_x)) if cfg.few_shot else len(d.new_x)
        io = step_indices(cfg.seed, STREAM_OLD, step, old_pool, cfg.old_per_step).to(self.device)
        inew = step_indices(cfg.seed, STREAM_NEW, step, new_pool, cfg.new_per_step).to(self.device)
        old_x = d.old_x[io]
        if cfg.augment:
            old_x = shift_augment(old_x, self.augmenter)
        return torch.cat([old_x, d.new_x[inew]]), torch.cat([d.old_y[io], d.new_y[inew]])

    def run(self) -> dict[str, Any]:
        cfg = self.config
        n_old = cfg.old_per_step
        start_val = validate(self.market, self.data)  # the whole validation sets, for the summary
        for hook in self.hooks:
            hook.on_start(cfg, self.market, 0)
        for hook in self.hooks:  # the log uses the same eval_samples old images at every point
            hook.on_step({"step": 0, "seconds": 0.0, **validate(self.market, self.data, cfg.eval_samples)})
        start = time.perf_counter()
        for step in range(cfg.steps):
            x, y = self.batch(step)
            response = self.learner.serve(x, labels=y)
            losses = per_example_cross_entropy(response.logits, y)
            correct = (response.logits.argmax(1) == y).float()
            metrics: dict[str, Any] = {"step": step + 1, "seconds": time.perf_counter() - start,
                                       "updates": self.learner.stats["updates"]}
            for part, sl in (("old", slice(0, n_old)), ("new", slice(n_old, None))):
                if len(correct[sl]):
                    metrics[f"learn_{part}_accuracy"] = 100.0 * float(correct[sl].mean())
                    metrics[f"learn_{part}_loss"] = float(losses[sl].mean())
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                metrics.update(validate(self.market, self.data, cfg.eval_samples))
            for hook in self.hooks:
                hook.on_step(metrics)
        seconds = time.perf_counter() - start
        end_val = validate(self.market, self.data)
        summary = {
            "experiment": cfg.experiment, "steps": cfg.steps, "seconds": round(seconds, 1),
            "steps_per_second": cfg.steps / max(seconds, 1e-9), "device": str(self.device),
            "machine": machine_name(self.device),
            "old": self.data.old_name, "new": self.data.new_name,
            "val_old_start": start_val["val_old_accuracy"], "val_old_end": end_val["val_old_accuracy"],
            "val_new_start": start_val["val_new_accuracy"], "val_new_end": end_val["val_new_accuracy"],
            "old_drop_points": start_val["val_old_accuracy"] - end_val["val_old_accuracy"],
            "pretrain_test_accuracy": self.meta.get("test_accuracy"),
            "target_met": end_val["val_new_accuracy"] >= 90.0
            and start_val["val_old_accuracy"] - end_val["val_old_accuracy"] <= 0.5,
            **{f"learner_{k}": v for k, v in self.learner.stats.items()},
        }
        if cfg.save:
            meta = {"config": dataclasses.asdict(cfg), "summary": summary, "pretrain": self.meta}
            save_checkpoint(cfg.save, self.market.state_dict(), self.learner.state_dict(), meta)
        for hook in self.hooks:
            hook.on_end(summary)
        return summary


def run_experiment(config: ContinualConfig, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Run one experiment and return its summary (validation accuracies in percent)."""
    return ContinualRun(config, hooks).run()
