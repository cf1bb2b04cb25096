"""One continual-learning run (docs/algorithm.md section 7): serve, learn from the labels, validate.

Each step serves `old_per_step` old and `new_per_step` new images, every one
along its own random path, with its label known at once; the learner
reconciles the step's records (K = the batch) as V2 with a whole-model unit
vector and a fixed learning rate. Samples come from the whole training
stream; `few_shot` reproduces the published runs, whose indices were bounded
by the subset size and so drew from the first 240 old and first 16 new
images only.

With `average` = N the run also keeps an exponential moving average of
the weights over about N steps (torch.optim.swa_utils.AveragedModel, decay
1 - 1/N) and validates that instead of the current weights. Requests are still
served along paths around the current weights, which keep learning; the
average is meant to cancel much of the random part of their steps (each
has the length of the rate, mostly in directions the records are not
about) and keep their steady drift towards the new class, about N steps
late. The current weights' figures are logged beside it as `served_*`.

A run checkpoints its market, learner and sampling state every
`checkpoint_every` steps; resumed, it continues exactly where the checkpoint
was taken (the stream's images are a pure function of seed and step).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import CheckpointError, MarketplaceError
from ..machine import machine_name, resolve_device
from ..market import Market
from ..optim import V2
from ..rng import derive_seeds
from ..specs import freeze_all_but_biases_norms_and_head
from ..training import Hook, accuracy, load_checkpoint, save_checkpoint
from ..training.averaging import average_state, pop_average, weight_average
from . import dress, dress_class10, nine
from .config import ContinualConfig, scheduled_rate
from .learner import ContinualLearner
from .losses import per_example_cross_entropy
from .pretrain import load_market
from .stream import STREAM_AUGMENT, STREAM_NEW, STREAM_OLD, ContinualData, shift_augment, step_indices

EXPERIMENTS = {module.NAME: module for module in (dress, dress_class10, nine)}
__all__ = ["EXPERIMENTS", "ContinualConfig", "ContinualRun", "experiment_data", "run_experiment", "validate"]


def experiment_data(experiment: str, data_dir: str | None, device: torch.device) -> ContinualData:
    """The old and new data of an experiment (`EXPERIMENTS`)."""
    if experiment not in EXPERIMENTS:
        raise MarketplaceError(f"unknown experiment {experiment!r}; choose from {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[experiment].load(data_dir, device)


@torch.no_grad()
def validate(market: Market, data: ContinualData, old_samples: int | None = None) -> dict[str, float]:
    """Validation accuracy (percent) and loss of the base weights on old and new classes."""
    n = len(data.val_old_x) if old_samples is None else min(old_samples, len(data.val_old_x))
    old_acc, old_loss = accuracy(market, data.val_old_x[:n], data.val_old_y[:n])
    new_acc, new_loss = accuracy(market, data.val_new_x, data.val_new_y)
    return {"val_old_accuracy": old_acc, "val_old_loss": old_loss,
            "val_new_accuracy": new_acc, "val_new_loss": new_loss}


def _flat(state: dict[str, Any]) -> dict[str, Any]:
    """Learner state keys without dots (a checkpoint's keys split at the first dot)."""
    return {k.replace(".", "/"): v for k, v in state.items()}


def _unflat(state: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("/", "."): v for k, v in state.items()}


class ContinualRun:
    """One run of an experiment: data, market, learner and the loop over steps, resumable."""

    def __init__(self, config: ContinualConfig, hooks: Sequence[Hook] = ()):
        config.validate()
        self.config, self.hooks = config, list(hooks)
        self.device = resolve_device(config.device)
        self.data = experiment_data(config.experiment, config.data_dir, self.device)
        self.market, self.meta = load_market(config.checkpoint, self.device, self.data.classes)
        partial = config.learn == "partial"
        if partial:  # before the market is built: a market reads requires_grad once
            freeze_all_but_biases_norms_and_head(self.market.specs)
        if partial or tuple(self.market.vendor_counts) != tuple(config.vendors):
            self.market = Market(list(self.market.specs), list(config.vendors)).to(self.device)
        optimizer = V2(self.market, lr=config.lr, probe_scale=config.probe_scale, per_spec=config.unit == "spec",
                       decay=0.0, seed=config.seed, attribution=config.attribution)
        records = config.old_per_step + config.new_per_step if config.records is None else config.records
        self.learner = ContinualLearner(optimizer, records=records, outliers=config.outliers,
                                        path_seed=config.seed, balanced=config.balanced,
                                        baseline=config.baseline, mirrored=config.mirrored)
        self.averaged = weight_average(self.market, config.average) if config.average is not None else None
        self.augmenter = torch.Generator().manual_seed(int(derive_seeds(config.seed, STREAM_AUGMENT)[0]) & (2**63 - 1))
        self.step, self.seconds, self.eval_seconds, self.start_val = 0, 0.0, 0.0, None
        if config.resume:
            self._restore()

    # -- state ---------------------------------------------------------------

    def save(self) -> None:
        """Write the run's checkpoint atomically: weights, learner, sampling state, progress."""
        meta = {"config": dataclasses.asdict(self.config), "step": self.step, "seconds": self.seconds,
                "eval_seconds": self.eval_seconds, "start_val": self.start_val, "pretrain": self.meta,
                "continual_run": True}
        state = _flat(self.learner.state_dict())
        state["augmenter"] = self.augmenter.get_state()
        if self.averaged is not None:
            state.update(average_state(self.averaged))
        save_checkpoint(self.config.save, self.market.state_dict(), state, meta)

    def _restore(self) -> None:
        """Continue from `config.save` when it exists (a fresh run otherwise, said by the first line)."""
        path = self.config.save
        if not Path(path).exists():
            return
        ckpt = load_checkpoint(path)
        if not ckpt.meta.get("continual_run"):
            raise CheckpointError(f"{path} is not a continual run's checkpoint")
        differences = self.config.resume_differences(ckpt.meta.get("config", {}))
        if differences:
            raise CheckpointError(f"{path} was run with {'; '.join(differences)}: resume with the same settings")
        if ckpt.meta["step"] > self.config.steps:
            raise CheckpointError(f"{path} is already at step {ckpt.meta['step']}, past steps={self.config.steps}")
        self.market.load_state_dict({k: v.to(self.device) for k, v in ckpt.model.items()})
        state = dict(ckpt.optimizer)
        self.augmenter.set_state(state.pop("augmenter"))
        averaged = pop_average(state)
        if self.averaged is not None:
            self.averaged.load_state_dict({k: v.to(self.device) for k, v in averaged.items()})
        self.learner.load_state_dict(_unflat(state))
        self.step, self.seconds = int(ckpt.meta["step"]), float(ckpt.meta["seconds"])
        self.eval_seconds, self.start_val, self.meta = (float(ckpt.meta["eval_seconds"]), ckpt.meta["start_val"],
                                                        ckpt.meta["pretrain"])

    # -- the loop ------------------------------------------------------------

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

    def learn(self, step: int) -> dict[str, float]:
        """Serve and learn from one step's images; the counts of correct answers and summed losses.

        With K (`records`) below the step's images, they are served in
        batches that each complete the learner's K, with an update after
        each: every image is served with the seeds its record is
        reconciled with, and none is discarded as stale.
        """
        x, y = self.batch(step)
        self.learner.optimizer.lr = [scheduled_rate(self.config, step)] * self.market.depth
        logits, start = [], 0
        while start < len(x):
            end = start + self.learner.records - self.learner.buffered
            logits.append(self.learner.serve(x[start:end], labels=y[start:end]).logits)
            start = end
        logits = torch.cat(logits)
        with torch.no_grad():
            losses = per_example_cross_entropy(logits, y)
            correct = (logits.argmax(1) == y).float()
        n_old = self.config.old_per_step
        return {"old_correct": float(correct[:n_old].sum()), "old_loss": float(losses[:n_old].sum()),
                "new_correct": float(correct[n_old:].sum()), "new_loss": float(losses[n_old:].sum())}

    def _validate(self, samples: int | None) -> dict[str, float]:
        """The validated weights' figures (the average, when kept), and then the served weights' as served_*."""
        start = time.perf_counter()
        if self.averaged is None:
            out = validate(self.market, self.data, samples)
        else:
            out = {**validate(self.averaged.module, self.data, samples),
                   **{f"served_{k}": v for k, v in validate(self.market, self.data, samples).items()}}
        self.eval_seconds += time.perf_counter() - start
        return out

    def run(self) -> dict[str, Any]:
        cfg = self.config
        fresh = self.step == 0
        if fresh:
            self.start_val = self._validate(None)  # the whole validation sets, for the summary
        for hook in self.hooks:
            hook.on_start(cfg, self.market, self.step)
        if fresh:  # the log uses the same eval_samples old images at every point
            self._emit({"step": 0, "seconds": 0.0, **self._validate(cfg.eval_samples)})
        window = {"old_correct": 0.0, "old_loss": 0.0, "new_correct": 0.0, "new_loss": 0.0, "steps": 0}
        clock = time.perf_counter() - self.seconds
        while self.step < cfg.steps:
            for key, value in self.learn(self.step).items():
                window[key] += value
            if self.averaged is not None:
                self.averaged.update_parameters(self.market)
            window["steps"] += 1
            self.step += 1
            self.seconds = time.perf_counter() - clock
            last = self.step == cfg.steps
            evaluate = self.step % cfg.eval_every == 0 or last
            if evaluate or self.step % cfg.log_every == 0:
                metrics = {"step": self.step, "seconds": self.seconds, "updates": self.learner.stats["updates"],
                           **self._window_metrics(window)}
                if evaluate:
                    metrics.update(self._validate(cfg.eval_samples))
                self._emit(metrics)
                window = dict.fromkeys(window, 0.0)
                window["steps"] = 0
            else:
                self._emit({"step": self.step, "seconds": self.seconds})
            if cfg.save and (self.step % cfg.checkpoint_every == 0 or last):
                self.save()
        summary = self.summary(self._validate(None))
        for hook in self.hooks:
            hook.on_end(summary)
        return summary

    def _window_metrics(self, w: dict[str, float]) -> dict[str, float]:
        """Learning accuracy and loss of the served requests, averaged over the steps since the last log."""
        out = {}
        for part, per_step in (("old", self.config.old_per_step), ("new", self.config.new_per_step)):
            n = per_step * w["steps"]
            if n:
                out[f"learn_{part}_accuracy"] = 100.0 * w[f"{part}_correct"] / n
                out[f"learn_{part}_loss"] = w[f"{part}_loss"] / n
        return out

    def _emit(self, metrics: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook.on_step(metrics)

    def summary(self, end_val: dict[str, float]) -> dict[str, Any]:
        cfg, start_val = self.config, self.start_val
        exp = EXPERIMENTS[cfg.experiment]
        drop = start_val["val_old_accuracy"] - end_val["val_old_accuracy"]
        return {
            "experiment": cfg.experiment, "steps": cfg.steps, "seconds": round(self.seconds, 1),
            "eval_seconds": round(self.eval_seconds, 1),
            "steps_per_second": cfg.steps / max(self.seconds - self.eval_seconds, 1e-9),
            "device": str(self.device), "machine": machine_name(self.device), "threads": torch.get_num_threads(),
            "old": self.data.old_name, "new": self.data.new_name,
            "val_old_start": start_val["val_old_accuracy"], "val_old_end": end_val["val_old_accuracy"],
            "val_new_start": start_val["val_new_accuracy"], "val_new_end": end_val["val_new_accuracy"],
            "old_drop_points": drop,
            "averaged_over_steps": cfg.average,
            **({"served_val_old_end": end_val["served_val_old_accuracy"],
                "served_val_new_end": end_val["served_val_new_accuracy"]} if self.averaged is not None else {}),
            "pretrain_test_accuracy": self.meta.get("test_accuracy"),
            "target": exp.TARGET,
            "target_met": end_val["val_new_accuracy"] >= exp.TARGET_NEW and drop <= 0.5,
            **{f"learner_{k}": v for k, v in self.learner.stats.items()},
        }


def run_experiment(config: ContinualConfig, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Run (or resume) one experiment and return its summary (validation accuracies in percent)."""
    return ContinualRun(config, hooks).run()
