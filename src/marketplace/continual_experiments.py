"""The two published continual-learning experiments (ALGORITHM.md section 7).

1. `dress`: a CNN pre-trained with V2 on MNIST digits learns Fashion-MNIST
   class 3 (dress) as a new class 10. The checkpoint's 10-way head is
   widened to 11 outputs; the new row is the mean of the old rows, so its
   logit is the mean of the digit logits and never the strict maximum: every
   digit prediction stays what it was.
2. `nine`: a CNN pre-trained with digit 9 excluded from the loss
   (`pretrain(..., exclude=(9,))`, the article's ignore_index run) learns 9.

Each step serves `old_per_step` old and `new_per_step` new images, every one
along its own random path, with its label known at once; the learner
reconciles the step's records (K = the batch) as V2 with a whole-model unit
vector and a fixed learning rate. Samples come from the whole training
stream; `few_shot` reproduces the published runs, whose indices were bounded
by the subset size and so drew from the first 240 old and first 16 new
images only.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .continual import ContinualLearner, per_example_cross_entropy
from .errors import MarketplaceError
from .functional import path_losses
from .machine import cpu_name
from .market import Market
from .optim import V2
from .rng import derive_seeds
from . import train as _train  # _train.load_data: looked up at call time (tests wrap it)
from .train import MEAN, STD, Hook, Trainer, TrainConfig, accuracy, build_market, resolve_device

EXPERIMENTS = ("dress", "nine")
DRESS = 3  # the Fashion-MNIST class
STREAM_OLD, STREAM_NEW, STREAM_AUGMENT = 11, 12, 13  # seed streams of the experiment's sampling


# -- data ----------------------------------------------------------------------


@dataclass
class ContinualData:
    """Training streams and validation sets of old and new classes, images [n, 1, 28, 28]."""

    old_x: torch.Tensor
    old_y: torch.Tensor
    new_x: torch.Tensor
    new_y: torch.Tensor
    val_old_x: torch.Tensor
    val_old_y: torch.Tensor
    val_new_x: torch.Tensor
    val_new_y: torch.Tensor
    classes: int  # outputs of the head
    old_name: str
    new_name: str


def experiment_data(experiment: str, data_dir: str | None, device: torch.device) -> ContinualData:
    """The old and new data of `dress` (digits + dress as class 10) or `nine` (0-8 + 9)."""
    if experiment not in EXPERIMENTS:
        raise MarketplaceError(f"unknown experiment {experiment!r}; choose from {', '.join(EXPERIMENTS)}")
    x, y = _train.load_data("mnist", "train", data_dir, device)
    vx, vy = _train.load_data("mnist", "test", data_dir, device)
    if experiment == "dress":
        fx, fy = _train.load_data("fashion-mnist", "train", data_dir, device)
        fvx, fvy = _train.load_data("fashion-mnist", "test", data_dir, device)
        new, vnew = fy == DRESS, fvy == DRESS
        label = lambda n: torch.full((n,), 10, dtype=torch.int64, device=device)
        return ContinualData(x, y, fx[new], label(int(new.sum())), vx, vy, fvx[vnew], label(int(vnew.sum())),
                             classes=11, old_name="digits", new_name="dress")
    old, vold = y != 9, vy != 9
    return ContinualData(x[old], y[old], x[~old], y[~old], vx[vold], vy[vold], vx[~vold], vy[~vold],
                         classes=10, old_name="digits 0-8", new_name="digit 9")


def shift_augment(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels each way, filling with the background.

    x: [B, 1, H, W], normalised. A cheap stand-in for the article's
    rotation + perspective augmentation.
    """
    b, _, h, w = x.shape
    background = (0.0 - MEAN) / STD
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=background)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = dx[:, None] + torch.arange(w, device=x.device)  # [B, W]
    out = padded[torch.arange(b, device=x.device)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    return out.unsqueeze(1)


def step_indices(seed: int, stream: int, step: int, pool: int, count: int) -> torch.Tensor:
    """`count` indices in [0, pool), with replacement: a pure function of (seed, stream, step)."""
    g = torch.Generator().manual_seed(int(derive_seeds(seed, stream, step)[0]) & (2**63 - 1))
    return torch.randint(0, pool, (count,), generator=g)


# -- pre-training with classes left out of the loss ----------------------------


@dataclass
class ExcludingTrainer(Trainer):
    """`Trainer` whose loss ignores the examples of `exclude` (cross-entropy's ignore_index).

    The excluded images stay in the batches; only their loss is left out,
    so their output slot is never trained towards or away from. Test
    accuracy is measured on the other classes.
    """

    exclude: tuple[int, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        if self.exclude:
            keep = ~torch.isin(self.y_test_full, torch.tensor(self.exclude, device=self.device))
            self.x_test_full, self.y_test_full = self.x_test_full[keep], self.y_test_full[keep]
            self.x_test, self.y_test = self.x_test_full[: self.config.eval_samples], self.y_test_full[: self.config.eval_samples]

    def path_losses(self, x, y, vendors):
        out = self.market.evaluate(x, vendors)
        keep = ~torch.isin(y, torch.tensor(self.exclude, device=y.device)) if self.exclude else slice(None)
        return path_losses(out.products[:, keep], y[keep]), out.paths, out.products

    def save(self, path: str, seconds: float) -> None:
        meta = {"config": dataclasses.asdict(self.config), "seconds": seconds,
                "test_accuracy": self.test_accuracy, "exclude": list(self.exclude)}
        save_checkpoint(path, self.market.state_dict(), self.optimizer.state_dict(), meta)


def pretrain(config: TrainConfig, exclude: Sequence[int] = (), hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """`marketplace train` with the classes `exclude` left out of the loss; returns its summary."""
    summary = ExcludingTrainer(config, hooks, exclude=tuple(exclude)).run()
    summary["exclude"] = list(exclude)
    return summary


# -- the market to continue from -----------------------------------------------


def widen_head(market: Market, classes: int) -> Market:
    """A market whose last Linear layer has `classes` outputs; new rows are the mean of the old ones.

    A new class's logit then starts as the mean of the old logits, below
    their maximum, so no old prediction changes.
    """
    head = market.specs[-1]
    linears = [(name, m) for name, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise MarketplaceError("the last spec has no Linear layer to widen")
    name, old = linears[-1]
    if classes < old.out_features:
        raise MarketplaceError(f"cannot narrow the head from {old.out_features} to {classes} outputs")
    if classes == old.out_features:
        return market
    new = nn.Linear(old.in_features, classes, bias=old.bias is not None).to(old.weight.device)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        new.weight[old.out_features:] = old.weight.mean(0)
        if old.bias is not None:
            new.bias[: old.out_features] = old.bias
            new.bias[old.out_features:] = old.bias.mean()
    if not name:  # the spec is the Linear layer itself
        head = new
    else:
        *parents, last = name.split(".")
        parent = head
        for part in parents:
            parent = getattr(parent, part)
        setattr(parent, last, new)
    return Market(list(market.specs[:-1]) + [head], market.vendor_counts, market.sampling).to(market.device)


def load_market(path: str, device: torch.device, classes: int) -> tuple[Market, dict[str, Any]]:
    """The beautiful-MNIST market of a `marketplace train` checkpoint, its head widened to `classes`."""
    ckpt = load_checkpoint(path)
    saved = ckpt.meta.get("config", {})
    config = TrainConfig(vendors=tuple(saved.get("vendors", (4, 4, 4))), sampling=saved.get("sampling"),
                         norm=saved.get("norm", "instance"), batch=saved.get("batch", 128))
    market = build_market(config, device)
    try:
        market.load_state_dict(ckpt.model)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not hold a beautiful-MNIST market: {str(e).splitlines()[0]}") from e
    return widen_head(market, classes), ckpt.meta


# -- the experiment ------------------------------------------------------------


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
                                        path_seed=config.seed, balanced=config.balanced)
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


def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    return f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def run_experiment(config: ContinualConfig, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Run one experiment and return its summary (validation accuracies in percent)."""
    return ContinualRun(config, hooks).run()


# -- logging and plots -----------------------------------------------------------


class PrintProgress(Hook):
    """One line per validation: learning and validation accuracy of old and new classes."""

    def __init__(self, every: int = 1):
        self.every = every

    def on_step(self, metrics: dict[str, Any]) -> None:
        if "val_old_accuracy" not in metrics:
            return
        learn = ""
        if "learn_new_accuracy" in metrics:
            learn = (f"learn old {metrics['learn_old_accuracy']:5.1f}% new {metrics['learn_new_accuracy']:5.1f}%  ")
        print(f"step {metrics['step']:>6}  {learn}val old {metrics['val_old_accuracy']:6.2f}% "
              f"new {metrics['val_new_accuracy']:6.2f}%  ({metrics['seconds']:.0f} s)", flush=True)

    def on_end(self, summary: dict[str, Any]) -> None:
        print(f"{summary['experiment']}: {summary['new']} {summary['val_new_start']:.2f}% -> "
              f"{summary['val_new_end']:.2f}%, {summary['old']} {summary['val_old_start']:.2f}% -> "
              f"{summary['val_old_end']:.2f}% after {summary['steps']} steps in {summary['seconds']:.0f} s "
              f"on {summary['device']}", flush=True)


def mlflow_hook(**kwargs) -> list[Hook]:
    """[an MLflow logger for continual runs] when `import mlflow` works, else [] (MLflow is optional)."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        return []
    from .tracking import MlflowLogger

    class ContinualMlflowLogger(MlflowLogger):
        """`tracking.MlflowLogger` with the continual run's summary at the end."""

        def on_end(self, summary: dict[str, Any]) -> None:
            if not self.active:
                return
            self._log(metrics={f"final_{k}": v for k, v in summary.items()}, step=int(summary["steps"]))
            for path in self.artifacts:
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path))
            self.close("FINISHED")

    return [ContinualMlflowLogger(**{"experiment": "marketplace-continual", **kwargs})]


def read_log(path: str | Path) -> tuple[list[dict], dict | None, dict | None]:
    """(step records, start record, end record) of a JSON-lines log written by `JsonLog`."""
    steps, start, end = [], None, None
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        event = rec.get("event")
        if event == "start":
            start, steps = rec, []  # a log appended to twice: keep the last run
        elif event == "end":
            end = rec
        elif event == "step":
            steps.append(rec)
    return steps, start, end


def _ema(values: list[float], weight: float) -> list[float]:
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def plot_log(log: str | Path, out: str | Path, title: str | None = None, smoothing: float = 0.9) -> Path:
    """Plot a run's learning and validation curves, like the article's figures, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, start, end = read_log(log)
    if not steps:
        raise MarketplaceError(f"{log} has no step records to plot")
    config = (start or {}).get("config", {})
    old = end.get("old", "old classes") if end else "old classes"
    new = end.get("new", "new class") if end else "new class"
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [
        (axes[0, 0], "accuracy", f"new: {new}", "learn_new_accuracy", "val_new_accuracy", "accuracy (%)"),
        (axes[0, 1], "accuracy", f"old: {old}", "learn_old_accuracy", "val_old_accuracy", "accuracy (%)"),
        (axes[1, 0], "loss", f"new: {new}", "learn_new_loss", "val_new_loss", "cross-entropy"),
        (axes[1, 1], "loss", f"old: {old}", "learn_old_loss", "val_old_loss", "cross-entropy"),
    ]
    for ax, kind, name, learn_key, val_key, ylabel in panels:
        learn = [(r["step"], r[learn_key]) for r in steps if learn_key in r]
        val = [(r["step"], r[val_key]) for r in steps if val_key in r]
        if learn:
            xs, ys = zip(*learn)
            ax.plot(xs, ys, color="tab:blue", alpha=0.2, linewidth=0.8)
            ax.plot(xs, _ema(list(ys), smoothing), color="tab:blue",
                    label=f"learning (served requests, EMA {smoothing:g})")
        if val:
            xs, ys = zip(*val)
            ax.plot(xs, ys, color="tab:red", marker="o", markersize=3, label="validation (base weights)")
        ys_all = [v for _, v in learn + val]
        if kind == "accuracy" and ys_all:  # at least 5 points tall, so a flat 0% curve is not blown up
            low, high = max(0.0, min(ys_all) - 2), min(100.0, max(ys_all) + 2)
            if high - low < 5:
                low, high = (low, low + 5) if low < 50 else (high - 5, high)
            ax.set_ylim(low, high)
        ax.set_title(f"{name}: {kind}")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    heading = title or f"continual learning: {config.get('experiment', '')}"
    details = (f"market {'x'.join(map(str, config.get('vendors', [])))}, lr {config.get('lr')}, "
               f"probe scale {config.get('probe_scale')}, unit {config.get('unit')}, "
               f"{config.get('old_per_step')}+{config.get('new_per_step')} per step"
               f"{', few-shot' if config.get('few_shot') else ''}")
    if end:
        details += f" | {end.get('steps')} steps, {end.get('seconds')} s on {end.get('device')}"
    fig.suptitle(f"{heading}\n{details}", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
