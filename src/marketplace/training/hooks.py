"""Training events and their subscribers: a rich progress bar and a JSON-lines log."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .config import TrainConfig


class Hook:
    """Receives training events; subclasses override what they need."""

    def on_start(self, config: TrainConfig, market, start_step: int) -> None: ...
    def on_step(self, metrics: dict[str, Any]) -> None: ...
    def on_end(self, summary: dict[str, Any]) -> None: ...


class StepRate:
    """Stamps a logged step's metrics with step, seconds, lr and steps/s since the last logged step."""

    def __init__(self, step: int, seconds: float):
        self.step, self.seconds = step, seconds

    def stamp(self, metrics: dict[str, Any], step: int, seconds: float, lr: float) -> dict[str, Any]:
        """The metrics to send to the hooks: stamped when there are any, else just the step and time."""
        if not metrics:
            return {"step": step, "seconds": seconds}
        metrics.update(step=step, seconds=seconds, lr=lr,
                       steps_per_second=(step - self.step) / max(seconds - self.seconds, 1e-9))
        self.step, self.seconds = step, seconds
        return metrics


class ProgressBar(Hook):
    """A progress bar over steps (or over seconds with only --max-seconds) with the latest metrics."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.latest: dict[str, Any] = {}

    def on_start(self, config: TrainConfig, market, start_step: int) -> None:
        self.by_steps = config.steps is not None
        total = config.steps if self.by_steps else config.max_seconds
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[counter]}"),
            TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"), console=self.console, transient=False,
        )
        market_name = "x".join(map(str, getattr(market, "vendor_counts", config.vendors)))  # a backprop model has none
        self.task = self.progress.add_task(f"{config.algorithm} {market_name}", total=total,
                                           counter="", metrics="")
        self.progress.start()

    def on_step(self, metrics: dict[str, Any]) -> None:
        self.latest.update(metrics)
        m = self.latest
        parts = []
        if "loss" in m:
            parts.append(f"loss {m['loss']:.3f}")
        if "train_accuracy" in m:
            parts.append(f"train {m['train_accuracy']:.1f}%")
        if "test_accuracy" in m:
            parts.append(f"test {m['test_accuracy']:.2f}%")
        if "steps_per_second" in m:
            parts.append(f"{m['steps_per_second']:.2f} steps/s")
        done = m["step"] if self.by_steps else min(m["seconds"], self.progress.tasks[0].total)
        self.progress.update(self.task, completed=done, counter=f"step {m['step']}", metrics="  ".join(parts))

    def on_end(self, summary: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=self.progress.tasks[0].total)
        self.progress.stop()
        self.console.print(
            f"test accuracy {summary['test_accuracy']:.2f}% after {summary['steps']} steps "
            f"in {summary['seconds']:.1f} s on {summary['device']}"
        )


class JsonLog(Hook):
    """Appends one JSON object per logged step to a file; each line is written whole and flushed."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self.file.write(json.dumps(clean, allow_nan=False) + "\n")  # NaN is not JSON: null instead
        self.file.flush()

    def on_start(self, config, market, start_step) -> None:
        self._write({"event": "start", "step": start_step, "config": dataclasses.asdict(config)})

    def on_step(self, metrics: dict[str, Any]) -> None:
        if len(metrics) > 2:  # more than step and seconds
            self._write({"event": "step", **metrics})

    def on_end(self, summary: dict[str, Any]) -> None:
        self._write({"event": "end", **summary})
        os.fsync(self.file.fileno())
        self.file.close()
