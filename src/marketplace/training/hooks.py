"""Training events and their subscribers: the run's first and last lines, a progress bar, a JSON-lines log."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .build import default_rates
from .cheap_vendors import describe_market
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


def market_line(config: TrainConfig, market, start_step: int = 0) -> str:
    """`market 4x4x64 (asked 4,4,4; ...): 1,024 paths, v2 on mnist, cpu`: what this run trains, said first."""
    counts = getattr(market, "vendor_counts", None)
    if counts is None:  # a backprop baseline: no vendors
        return f"{config.algorithm} on {config.data or config.dataset}"
    paths = getattr(market, "num_paths", None)
    where = getattr(market, "device", None)
    rates = default_rates(config, counts) if config.lr is None else None  # yours are not described as lowered
    text = f"market {describe_market(config.vendors, counts, config.cheap_vendors, rates)}: "
    text += f"{paths:,} paths, " if isinstance(paths, int) else ""
    text += f"{config.algorithm} on {config.data or config.dataset}" + (f", {where}" if where is not None else "")
    frozen = getattr(market, "frozen_parameters", 0)
    text += f", {frozen:,} parameters frozen" if frozen else ""
    if config.clock_horizon() is not None:
        text += (f", a {config.schedule} lr schedule over the {config.max_seconds:g}-s budget "
                 "(it follows the clock: give --steps for a run that repeats exactly)")
    if config.average:
        text += f", scoring the weights averaged over about {config.average:,} steps"
        if config.steps is not None and config.steps < config.average:  # the average would still lag far behind
            text += f" (more than the run's {config.steps:,}: the average leans on the first weights)"
    return text + (f", resumed at step {start_step}" if start_step else "")


def final_line(summary: dict[str, Any]) -> str:
    """`test accuracy 97.10% after 1000 steps in 60.2 s on cpu`: the run's result in one line."""
    averaged = summary.get("averaged_over_steps")
    weights = f" (weights averaged over about {averaged:,} steps)" if averaged else ""
    return (f"test accuracy {summary['test_accuracy']:.2f}%{weights} after {summary['steps']} steps "
            f"in {summary['seconds']:.1f} s on {summary['device']}")


class RunLines(Hook):
    """Prints the market trained when the run starts (the first line) and, with `last`, the result at its end."""

    def __init__(self, file: TextIO | None = None, last: bool = True):
        self.file, self.last = file, last

    def on_start(self, config: TrainConfig, market, start_step: int) -> None:
        print(market_line(config, market, start_step), file=self.file or sys.stdout, flush=True)

    def on_end(self, summary: dict[str, Any]) -> None:
        if self.last:
            print(final_line(summary), file=self.file or sys.stdout, flush=True)


def metrics_text(m: dict[str, Any]) -> str:
    """The latest loss, accuracies and speed, as the progress display shows them."""
    parts = []
    if "loss" in m:
        parts.append(f"loss {m['loss']:.3f}")
    if "train_accuracy" in m:
        parts.append(f"train {m['train_accuracy']:.1f}%")
    if "test_accuracy" in m:
        parts.append(f"test {m['test_accuracy']:.2f}%")
    if "steps_per_second" in m:
        parts.append(f"{m['steps_per_second']:.2f} steps/s")
    return "  ".join(parts)


class ProgressBar(Hook):
    """Progress over steps (or seconds with only --max-seconds) with the latest metrics.

    A rich bar on a terminal; elsewhere (a pipe, a log file, a notebook's
    captured output) rich would print nothing until the end, so a plain line
    every `every` seconds and at each test evaluation instead.
    """

    def __init__(self, console: Console | None = None, every: float = 30.0):
        self.console = console or Console(stderr=True)
        self.every = every
        self.latest: dict[str, Any] = {}

    def on_start(self, config: TrainConfig, market, start_step: int) -> None:
        self.by_steps = config.steps is not None
        total = config.steps if self.by_steps else config.max_seconds
        self.plain = not self.console.is_terminal
        if self.plain:
            self.total, self.printed = total, None  # the first step prints: the run has begun
            return
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
        if self.plain:
            now = time.monotonic()
            if "test_accuracy" in metrics or self.printed is None or now - self.printed >= self.every:
                self.printed = now
                of = f"/{self.total}" if self.by_steps else ""
                self.console.print(f"step {m['step']}{of}  {m['seconds']:.0f} s  {metrics_text(m)}",
                                   highlight=False, soft_wrap=True)
            return
        done = m["step"] if self.by_steps else min(m["seconds"], self.progress.tasks[0].total)
        self.progress.update(self.task, completed=done, counter=f"step {m['step']}", metrics=metrics_text(m))

    def on_end(self, summary: dict[str, Any]) -> None:
        if not self.plain:
            self.progress.update(self.task, completed=self.progress.tasks[0].total)
            self.progress.stop()
        self.console.print(final_line(summary), highlight=False, soft_wrap=True)


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
        record = {"event": "start", "step": start_step, "config": dataclasses.asdict(config)}
        if hasattr(market, "vendor_counts"):  # the market trained, beside the counts asked in the config
            record["vendors"] = list(market.vendor_counts)
        self._write(record)

    def on_step(self, metrics: dict[str, Any]) -> None:
        if len(metrics) > 2:  # more than step and seconds
            self._write({"event": "step", **metrics})

    def on_end(self, summary: dict[str, Any]) -> None:
        self._write({"event": "end", **summary})
        os.fsync(self.file.fileno())
        self.file.close()
