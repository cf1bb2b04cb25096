"""How a continual run is shown: progress lines, MLflow when it imports, and the article-style plot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..errors import MarketplaceError
from ..training import Hook


class PrintProgress(Hook):
    """Progress of a run: steps/s and ETA, and a line per validation with learning and validation accuracy.

    On a terminal a rich progress bar; elsewhere (a log file, nohup) a plain
    line every `every_seconds`, since a bar would print nothing until the end.
    """

    def __init__(self, every_seconds: float = 30.0, console=None):
        from rich.console import Console

        self.every_seconds = every_seconds
        self.console = console or Console(stderr=True)
        self.bar = None

    def on_start(self, config, market, start_step: int) -> None:
        self.total, self.first = config.steps, start_step
        self.started = self.last_line = time.perf_counter()
        counts = "x".join(map(str, market.vendor_counts))
        where = f"resuming at step {start_step}" if start_step else "from step 0"
        frozen = market.frozen_parameters
        learns = f", {frozen:,} parameters frozen (learn={config.learn})" if frozen else ""
        self.console.print(f"continual {config.experiment}: market {counts}{learns}, {config.steps} steps, {where}",
                           highlight=False)
        if self.console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn(f"[bold]{config.experiment}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                                TimeRemainingColumn(), TextColumn("{task.fields[val]}"), console=self.console)
            self.task = self.bar.add_task(config.experiment, total=config.steps, completed=start_step, rate="", val="")
            self.bar.start()

    def _rate(self, step: int) -> tuple[float, float]:
        """(steps per second since the start of this process, seconds left)."""
        rate = (step - self.first) / max(time.perf_counter() - self.started, 1e-9)
        return rate, (self.total - step) / rate if rate > 0 else float("inf")

    def on_step(self, metrics: dict[str, Any]) -> None:
        step = metrics["step"]
        rate, left = self._rate(step)
        val = ""
        if "val_old_accuracy" in metrics:
            learn = ""
            if "learn_new_accuracy" in metrics:
                learn = f"learn old {metrics['learn_old_accuracy']:5.1f}% new {metrics['learn_new_accuracy']:5.1f}%  "
            val = f"{learn}val old {metrics['val_old_accuracy']:6.2f}% new {metrics['val_new_accuracy']:6.2f}%"
        if self.bar is not None:
            fields = {"rate": f"{rate:.1f} steps/s"} | ({"val": val} if val else {})
            self.bar.update(self.task, completed=step, **fields)
            return
        now = time.perf_counter()
        if val or now - self.last_line >= self.every_seconds:
            eta = f"{left / 60:.1f} min" if left != float("inf") else "?"
            self.console.print(f"step {step:>6}/{self.total}  {rate:5.1f} steps/s  eta {eta}  {val}".rstrip(),
                               highlight=False, soft_wrap=True)
            self.last_line = now

    def on_end(self, summary: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.console.print(f"{summary['experiment']}: {summary['new']} {summary['val_new_start']:.2f}% -> "
                           f"{summary['val_new_end']:.2f}%, {summary['old']} {summary['val_old_start']:.2f}% -> "
                           f"{summary['val_old_end']:.2f}% after {summary['steps']} steps in {summary['seconds']:.0f} s "
                           f"on {summary['device']}", highlight=False, soft_wrap=True)


def mlflow_hook(**kwargs) -> list[Hook]:
    """[an MLflow logger for continual runs] when `import mlflow` works, else [] (MLflow is optional)."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        return []
    from ..training.tracking import MlflowLogger

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
            # a resumed run keeps the steps up to where it resumed from; a new run (step 0) starts over
            start, steps = rec, [s for s in steps if s["step"] <= rec.get("step", 0)] if rec.get("step") else []
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


def plot_log(log: str | Path, out: str | Path, title: str | None = None, smoothing: float = 0.9,
             reference: dict[str, list[tuple[int, float]]] | None = None) -> Path:
    """Plot a run's learning and validation curves, like the article's figures, to a PNG.

    reference: published points to draw beside the curves, {metric key:
    [(step, value), ...]} (e.g. an experiment module's `ARTICLE`); points past
    the run's last step are drawn at their own step, so the axis shows how far
    the run is from them. None: the experiment's own `ARTICLE` when the log names one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, start, end = read_log(log)
    if not steps:
        raise MarketplaceError(f"{log} has no step records to plot")
    config = (start or {}).get("config", {})
    if reference is None:
        from .experiment import EXPERIMENTS

        reference = getattr(EXPERIMENTS.get(config.get("experiment")), "ARTICLE", {})
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
        served = [(r["step"], r["served_" + val_key]) for r in steps if "served_" + val_key in r]
        if val:
            xs, ys = zip(*val)
            what = "averaged weights" if served else "base weights"
            ax.plot(xs, ys, color="tab:red", marker="o", markersize=3, label=f"validation ({what})")
        if served:  # a run with --average: the weights requests are served around
            xs, ys = zip(*served)
            ax.plot(xs, ys, color="tab:orange", marker=".", markersize=3, linewidth=0.8,
                    label="validation (served weights)")
        published = reference.get(learn_key, []) + reference.get(val_key, [])
        for key, color in ((learn_key, "tab:blue"), (val_key, "tab:red")):
            points = reference.get(key, [])
            if points:
                xs, ys = zip(*points)
                ax.scatter(xs, ys, marker="*", s=120, color=color, edgecolor="black", zorder=5,
                           label=f"article, {'learning' if key == learn_key else 'validation'}")
        ys_all = [v for _, v in learn + val + served + published]
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
    rate = f"lr {config.get('lr')}"
    if config.get("lr_end") is not None:
        rate += f" to {config['lr_end']} from step {config.get('lr_hold', 0)}"
    details = (f"market {'x'.join(map(str, config.get('vendors', [])))}, {rate}, "
               f"probe scale {config.get('probe_scale')}, unit {config.get('unit')}, "
               f"{config.get('attribution', 'zscore')}{', baseline' if config.get('baseline') else ''}"
               f"{', mirrored' if config.get('mirrored') else ''}, "
               f"{config.get('old_per_step')}+{config.get('new_per_step')} per step"
               f"{', few-shot' if config.get('few_shot') else ''}"
               f"{', only biases, norms and head learn' if config.get('learn', 'all') == 'partial' else ''}")
    if end:
        details += f" | {end.get('steps')} steps, {end.get('seconds')} s on {end.get('device')}"
    fig.suptitle(f"{heading}\n{details}", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
