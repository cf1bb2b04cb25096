"""Curves and tables from JSON-lines run logs (`progress.JsonLog`), for markets and baselines alike.

    runs = [load_run(p) for p in Path("results/backprop").glob("*.jsonl")]
    plot_runs(runs, "backprop.png", smoothing=0.5)
    print(markdown_table(runs))

Test accuracy is what the run measured every eval_every steps (on its
eval_samples test examples) plus the final figure on the whole test set;
loss is the training-batch loss of the base weights, logged every log_every
steps. Smoothing is the exponential moving average of TensorBoard and the
MLflow UI (0.5 = the articles' "50% smoothing"), drawn over the raw curve.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from marketplace.errors import MarketplaceError
from marketplace.io import atomic_path

THRESHOLDS = (90.0, 95.0, 97.0, 98.0)


@dataclass
class RunLog:
    """One run read back from its JSON-lines log."""

    name: str
    config: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)  # "step" events, in order
    end: dict | None = None  # the summary, when the run finished

    def series(self, key: str) -> tuple[list[int], list[float], list[float]]:
        """(steps, seconds, values) of every record holding `key`; test accuracy ends with the final figure."""
        rows = [(r["step"], r["seconds"], r[key]) for r in self.records if r.get(key) is not None]
        if self.end is not None and key in ("test_accuracy", "test_loss") and key in self.end:
            rows.append((self.end["steps"], self.end["seconds"], self.end[key]))
        return [r[0] for r in rows], [r[1] for r in rows], [float(r[2]) for r in rows]

    @property
    def final_accuracy(self) -> float | None:
        if self.end is not None:
            return float(self.end["test_accuracy"])
        values = self.series("test_accuracy")[2]
        return values[-1] if values else None

    @property
    def best_accuracy(self) -> float | None:
        values = self.series("test_accuracy")[2]
        return max(values) if values else None

    def first_reaching(self, threshold: float) -> tuple[int, float] | None:
        """(step, seconds) of the first evaluation at or above `threshold` percent."""
        for step, seconds, value in zip(*self.series("test_accuracy")):
            if value >= threshold:
                return step, seconds
        return None

    def jitter(self) -> float | None:
        """Fluctuation of test accuracy: std (pp) of the changes between consecutive evaluations, second half."""
        values = self.series("test_accuracy")[2]
        values = values[len(values) // 2 :]
        diffs = [b - a for a, b in zip(values, values[1:])]
        if len(diffs) < 2:
            return None
        mean = sum(diffs) / len(diffs)
        return math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))

    @property
    def label(self) -> str:
        return self.name


def load_run(path: str | os.PathLike, name: str | None = None) -> RunLog:
    """Read a JSON-lines log. A fresh start (step 0) discards what came before; a resume continues."""
    path = Path(path)
    if not path.is_file():
        raise MarketplaceError(f"no run log at {path}")
    run = RunLog(name or path.stem)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise MarketplaceError(f"{path}:{n} is not JSON: {e}") from e
            event = record.pop("event", None)
            if event == "start":
                if record.get("step", 0) == 0:
                    run.records, run.end = [], None
                run.config = record.get("config", {})
            elif event == "step":
                run.records.append(record)
            elif event == "end":
                run.end = record
    if not run.records and run.end is None:
        raise MarketplaceError(f"{path} holds no training steps")
    return run


def find_runs(paths: Sequence[str | os.PathLike]) -> list[RunLog]:
    """Runs from .jsonl files and from directories (every .jsonl in them, sorted by name)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.jsonl"))
            if not found:
                raise MarketplaceError(f"{p} holds no .jsonl run logs")
            files.extend(found)
        else:
            files.append(p)
    if not files:
        raise MarketplaceError("no runs given")
    return [load_run(f) for f in files]


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing); weight 0 returns the values."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {weight}")
    out, last = [], 0.0
    for i, v in enumerate(values):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight ** (i + 1)))
    return out


def plot_runs(runs: Sequence[RunLog], out: str | os.PathLike, title: str | None = None,
              smoothing: float = 0.5, note: str | None = None) -> Path:
    """A 2x2 PNG: test accuracy and training loss, against steps and against wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lowest, highest = 100.0, 0.0
    for i, run in enumerate(runs):
        color = colors[i % len(colors)]
        for row, key in enumerate(("test_accuracy", "loss")):
            steps, seconds, values = run.series(key)
            if not values:
                continue
            if key == "test_accuracy":
                lowest, highest = min(lowest, *values), max(highest, *values)
            for col, xs in enumerate((steps, seconds)):
                ax = axes[row][col]
                if smoothing > 0:
                    ax.plot(xs, values, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(xs, smooth(values, smoothing), color=color, linewidth=1.6,
                        label=run.label if (row, col) == (0, 0) else None)
    for col, xlabel in enumerate(("step", "wall time (s)")):
        axes[0][col].set(xlabel=xlabel, ylabel="test accuracy (%)")
        axes[0][col].set_ylim(max(0.0, min(lowest, 90.0) - 3.0), min(100.0, max(highest, 50.0) + 3.0))
        axes[1][col].set(xlabel=xlabel, ylabel="training loss (log scale)")
        axes[1][col].set_yscale("log")
        axes[1][col].yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes[1][col].yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        axes[1][col].yaxis.set_minor_formatter(NullFormatter())
        for ax in (axes[0][col], axes[1][col]):
            ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    heading = title or ", ".join(r.label for r in runs)
    if smoothing > 0:
        heading += f"  (smoothing {smoothing:.0%}, raw curves faint)"
    fig.suptitle(heading)
    if note:
        fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=8, color="0.35")
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def _cell(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown_table(runs: Sequence[RunLog], thresholds: Sequence[float] = THRESHOLDS) -> str:
    """Final and best test accuracy, steps and seconds to each threshold, speed and jitter, one row per run."""
    head = (["run", "final %", "best %"] + [f"steps to {t:g}%" for t in thresholds]
            + [f"s to {t:g}%" for t in thresholds] + ["steps", "seconds", "steps/s", "jitter pp"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for run in runs:
        reached = [run.first_reaching(t) for t in thresholds]
        steps = run.end["steps"] if run.end else (run.records[-1]["step"] if run.records else 0)
        seconds = run.end["seconds"] if run.end else (run.records[-1]["seconds"] if run.records else 0.0)
        cells = ([run.label, _cell(run.final_accuracy, ".2f"), _cell(run.best_accuracy, ".2f")]
                 + [_cell(r and r[0], "d") for r in reached] + [_cell(r and r[1], ".0f") for r in reached]
                 + [str(steps), f"{seconds:.0f}", f"{steps / seconds:.2f}" if seconds else "—",
                    _cell(run.jitter(), ".2f")])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
