"""The articles' experiments as code: named sets of runs, each logged, tracked, plotted and tabulated.

An experiment is a function from its size (`RunSize`: steps and scale) to a list
of `Run`s, each a market `TrainConfig` or a backprop `BackpropConfig`.
`run_experiment` trains them one after another with the same hooks (a JSON
log always, MLflow unless turned off, a progress bar), then draws
`NAME.png` and writes `NAME.md` in the output directory.

Scale 1 is the published size (batch 512, vendor counts as in the
articles); `scale` < 1 multiplies the batch (at least 8) and every vendor
count (at least 2), so a short CPU version runs in minutes.
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


from marketplace.errors import MarketplaceError
from marketplace.io import write_atomic
from marketplace.machine import machine_summary
from marketplace.training import Hook, JsonLog, ProgressBar, TrainConfig, Trainer
from .baselines import BackpropConfig, BackpropTrainer
from .plot import load_run, markdown_table, plot_runs

PUBLISHED_BATCH = 512
# The articles' settings, pinned here so that a change of the library's defaults (tuned for small
# CPU markets) never changes an experiment. V1 (article 1): probe width = lr 1e-3, decay 1e-4.
# V2 (article 2, docs/algorithm.md): lr 0.1, decay 1e-5, probe scale 0.1, unit vector per spec.
PUBLISHED_SETTINGS: dict[str, dict[str, Any]] = {
    "v1": dict(lr=1e-3, decay=1e-4),
    "v2": dict(lr=0.1, decay=1e-5, probe_scale=0.1, per_spec=True),
    "adaptive": dict(lr=0.1, decay=1e-5, probe_scale=0.1, per_spec=True, meta_lr=0.1),
}


@dataclass(frozen=True)
class RunSize:
    """How big a run is: steps, scale (1 = published), and the evaluation cadence."""

    steps: int
    scale: float = 1.0
    batch_size: int | None = None  # None: 512 x scale (at least 8)
    eval_every: int | None = None  # None: about 20 evaluations per run
    eval_samples: int = 10_000
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None

    @property
    def batch(self) -> int:
        return self.batch_size or max(8, round(PUBLISHED_BATCH * self.scale))

    def vendors(self, count: int) -> int:
        return max(2, round(count * self.scale))

    def common(self) -> dict[str, Any]:
        """Settings every run of an experiment shares (same batches, same evaluations)."""
        return dict(batch=self.batch, steps=self.steps, seed=self.seed, device=self.device,
                    eval_every=self.eval_every or max(1, self.steps // 20), eval_samples=self.eval_samples,
                    log_every=max(1, min(10, self.steps // 50)), data_dir=self.data_dir)


@dataclass(frozen=True)
class Run:
    name: str
    config: TrainConfig | BackpropConfig


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    published: str  # what the articles report, for the table's header
    default_steps: int
    runs: Callable[..., list[Run]]  # (size, **options) -> runs
    options: tuple[str, ...] = ()  # the keyword options `runs` takes


def _market(name: str, size: RunSize, vendors: Sequence[int], algorithm: str, **overrides) -> Run:
    if algorithm not in PUBLISHED_SETTINGS:
        raise MarketplaceError(f"unknown algorithm {algorithm!r}; choose from {', '.join(PUBLISHED_SETTINGS)}")
    settings = {**size.common(), **PUBLISHED_SETTINGS[algorithm], **overrides}
    return Run(name, TrainConfig(vendors=tuple(vendors), algorithm=algorithm, **settings))


def _backprop(name: str, size: RunSize, **overrides) -> Run:
    return Run(name, BackpropConfig(**{**size.common(), **overrides}))


def _unique(runs: list[Run]) -> list[Run]:
    """Drop runs whose name repeats (small scales round different vendor counts to the same one)."""
    seen, out = set(), []
    for r in runs:
        if r.name not in seen:
            seen.add(r.name)
            out.append(r)
    return out


def depth_runs(size: RunSize, algorithm: str = "v1") -> list[Run]:
    """Depth 1 x {8, 16, 32, 64} vendors ("all at once") against depth 3 x {8, 16} (article 1)."""
    runs = [_market(f"{algorithm}-1x{size.vendors(m)}", size, [size.vendors(m)], algorithm=algorithm)
            for m in (8, 16, 32, 64)]
    runs += [_market(f"{algorithm}-3x{size.vendors(m)}", size, [size.vendors(m)] * 3, algorithm=algorithm)
             for m in (8, 16)]
    return _unique(runs)


def backprop_runs(size: RunSize, baseline_norm: str | None = None) -> list[Run]:
    """V1 and V2 (3 x 16) against backprop SGD at 1e-3, 3e-3, 7e-3 (BatchNorm) and Adam (InstanceNorm)."""
    market = [size.vendors(16)] * 3
    m = "x".join(map(str, market))
    sgd_norm, adam_norm = baseline_norm or "batch", baseline_norm or "instance"  # as in articles 2 and 1
    return [
        _market(f"v1-{m}", size, market, algorithm="v1"),
        _market(f"v2-{m}", size, market, algorithm="v2"),
        *[_backprop(f"sgd-{lr:g}-{sgd_norm}", size, algorithm="sgd", lr=lr, norm=sgd_norm)
          for lr in (1e-3, 3e-3, 7e-3)],
        _backprop(f"adam-1e-3-{adam_norm}", size, algorithm="adam", lr=1e-3, norm=adam_norm),
    ]


def norm_runs(size: RunSize, algorithm: str = "v2") -> list[Run]:
    """InstanceNorm against batch norm per product and batch norm over mixed products, in the market."""
    market = [size.vendors(16)] * 3
    m = "x".join(map(str, market))
    return [_market(f"{algorithm}-{m}-{norm}", size, market, algorithm=algorithm, norm=norm)
            for norm in ("instance", "product-batch", "mixed-batch")]


def sweep_runs(size: RunSize, algorithm: str = "v2", lrs: Sequence[float] | None = None,
               decays: Sequence[float] = (1e-4, 1e-5)) -> list[Run]:
    """Learning rate x decay grid on the 3 x 16 market."""
    lrs = lrs or ((0.03, 0.1, 0.3) if algorithm != "v1" else (0.005, 0.02, 0.05))
    market = [size.vendors(16)] * 3
    return [_market(f"{algorithm}-lr{lr:g}-decay{decay:g}", size, market, algorithm=algorithm, lr=lr, decay=decay)
            for lr in lrs for decay in decays]


def target_runs(size: RunSize, algorithm: str = "v2") -> list[Run]:
    """The published V2 configuration alone: 3 x 16, batch 512, lr 0.1, decay 1e-5, probe 0.1."""
    market = [size.vendors(16)] * 3
    return [_market(f"{algorithm}-{'x'.join(map(str, market))}", size, market, algorithm=algorithm)]


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("depth", "Market depth and vendor count (all at once vs marketplace)",
               "article 1, V1, batch 512: depth 3 x 16 best, then depth 3 x 8; both beat depth 1 x 64",
               3000, depth_runs, ("algorithm",)),
    Experiment("backprop", "Marketplace V1 and V2 against backprop SGD and Adam",
               "article 2, 3 x 16, batch 512: V2 >> V1; V2 beats SGD 1e-3, loses to SGD 3e-3 and 7e-3; "
               "article 1: Adam 98% in 70 steps", 2000, backprop_runs, ("baseline_norm",)),
    Experiment("norm", "InstanceNorm vs batch norm inside the market",
               "article 1: test accuracy fluctuates with BatchNorm (running statistics polluted by "
               "discarded products), not with InstanceNorm", 2000, norm_runs, ("algorithm",)),
    Experiment("sweep", "Learning rate and decay sweep",
               "article 1 (V1): the learning rate and its decay matter a lot", 2000, sweep_runs,
               ("algorithm", "lrs", "decays")),
    Experiment("target", "V2 at the published configuration",
               "articles: about 96% after 2,000 V2 steps; this project's target: >= 97% within 2,000 steps",
               2000, target_runs, ("algorithm",)),
]}


def _trainer(config):
    return BackpropTrainer if isinstance(config, BackpropConfig) else Trainer


def run_one(run: Run, out_dir: Path, experiment: str, tracking_uri: str | None = None,
            mlflow: bool = True, progress: bool = True, extra_hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Train one run with a fresh JSON log (out_dir/NAME.jsonl), MLflow and a progress bar."""
    log = out_dir / f"{run.name}.jsonl"
    log.unlink(missing_ok=True)  # a rerun replaces the old curve
    hooks: list[Hook] = [JsonLog(log)]
    tracker = None
    if mlflow:
        from marketplace.training.tracking import MlflowLogger

        tracker = MlflowLogger(tracking_uri, experiment=f"marketplace-{experiment}", run_name=run.name,
                               tags={"marketplace.experiment": experiment}, artifacts=[log])
        hooks.append(tracker)
    if progress:
        hooks.append(ProgressBar())
    hooks.extend(extra_hooks)
    try:
        return _trainer(run.config)(run.config, hooks).run()
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise


@dataclass
class ExperimentResult:
    name: str
    out_dir: Path
    summaries: dict[str, dict] = field(default_factory=dict)
    png: Path | None = None
    table: Path | None = None
    markdown: str = ""  # the table alone


def run_experiment(name: str, size: RunSize, out_dir: str | os.PathLike = "runs/experiments", tracking_uri: str | None = None,
                   mlflow: bool = True, progress: bool = True, smoothing: float = 0.5,
                   command: str | None = None, plot_only: bool = False, only: Sequence[str] | None = None,
                   **options) -> ExperimentResult:
    """Run every run of experiment `name`, then write out_dir/NAME/{RUN.jsonl, NAME.png, NAME.md}.

    plot_only: train nothing; redraw the PNG and the table from the logs an
    earlier invocation with the same size wrote. only: train just these runs
    (by name) and draw them with the others' earlier logs.
    """
    if name not in EXPERIMENTS:
        raise MarketplaceError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    unknown = [k for k, v in options.items() if v is not None and k not in exp.options]
    if unknown:
        raise MarketplaceError(f"experiment {name!r} takes no option {', '.join(unknown)} "
                               f"(it takes: {', '.join(exp.options) or 'none'})")
    runs = exp.runs(size, **{k: v for k, v in options.items() if v is not None})
    names = [r.name for r in runs]
    if only is not None and set(only) - set(names):
        raise MarketplaceError(f"experiment {name!r} at this size has no run {', '.join(sorted(set(only) - set(names)))}; "
                               f"its runs: {', '.join(names)}")
    train_now = [r for r in runs if not plot_only and (only is None or r.name in only)]
    for run in runs:
        run.config.validate()  # every mistake before the first (long) run starts
    out = Path(out_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    result = ExperimentResult(name, out)
    missing = [r.name for r in runs if r not in train_now and not (out / f"{r.name}.jsonl").is_file()]
    if missing:
        raise MarketplaceError(f"no logs for {', '.join(missing)} in {out}: run the experiment first "
                               "(with the same --steps, --scale and --batch)")
    for run in train_now:
        result.summaries[run.name] = run_one(run, out, name, tracking_uri, mlflow, progress)
    logs = [load_run(out / f"{run.name}.jsonl") for run in runs]
    if len(train_now) < len(runs):
        result.summaries = {log.name: result.summaries.get(log.name, log.end or {}) for log in logs}
    note = (f"{machine_summary()}; batch {size.batch}, {size.steps} steps, scale {size.scale:g}; "
            f"test accuracy on {size.eval_samples} examples during training, the last point on all 10,000")
    result.png = plot_runs(logs, out / f"{name}.png", title=exp.title, smoothing=smoothing, note=note)
    result.table, result.markdown = out / f"{name}.md", markdown_table(logs)
    finished = max((out / f"{run.name}.jsonl").stat().st_mtime for run in runs)
    if len(train_now) < len(runs) and (out / f"{name}.md").is_file():  # keep the commands that trained the runs
        earlier = re.search(r"^- command: `(.*)`$", (out / f"{name}.md").read_text(encoding="utf-8"), re.M)
        if earlier and train_now:
            command = f"{earlier.group(1)}`, then `{command}"
        elif earlier:
            command = earlier.group(1)
    write_atomic(result.table, _report(exp, size, logs, command, finished))
    return result


def _report(exp: Experiment, size: RunSize, logs, command: str | None, finished: float) -> str:
    command = command or " ".join(map(shlex.quote, ["python", *sys.argv]))
    when = datetime.datetime.fromtimestamp(finished, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"# {exp.title}\n\n"
            f"- command: `{command}`\n- machine: {machine_summary()}\n- runs finished: {when}\n"
            f"- size: {size.steps} steps, batch {size.batch}, scale {size.scale:g} (1 = published), "
            f"test accuracy during training on {size.eval_samples} examples, final on all 10,000\n"
            f"- published: {exp.published}\n\n"
            f"![{exp.name}]({exp.name}.png)\n\n"
            f"{markdown_table(logs)}\n\n"
            "`jitter pp`: standard deviation of the change in test accuracy between consecutive "
            "evaluations over the second half of the run (percentage points).\n")
