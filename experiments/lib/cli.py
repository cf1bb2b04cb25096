"""The command line of the experiment scripts: run one experiment, or draw run logs.

`python experiments/NAME.py [OPTIONS]` runs experiment NAME (`run_script`);
`python experiments/run.py NAME|list [OPTIONS]` is the same with the name
given; `python experiments/plot.py LOGS...` draws logs of earlier runs
(`marketplace train --log` writes the same format). A mistake prints one
line, as the `marketplace` command does.
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import Callable, List, Optional

import typer

from marketplace.cli import run
from marketplace.cli.parse import floats, fresh_dir
from marketplace.errors import MarketplaceError



def experiment(
    name: str = typer.Argument(..., help="depth, backprop, norm, sweep or target ('list' shows them)"),
    steps: Optional[int] = typer.Option(None, help="steps per run (default: the published count)"),
    scale: float = typer.Option(1.0, help="1 = published size; < 1 shrinks batch (min 8) and vendor counts (min 2)"),
    batch: Optional[int] = typer.Option(None, help="examples per step (default: 512 x scale, at least 8)"),
    out: str = typer.Option(default_factory=lambda: fresh_dir("experiment"), show_default="runs/experiment-<time>",
                            help="writes OUT/NAME/{RUN.jsonl, NAME.png, NAME.md} (results/ holds the committed ones)"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlruns)"),
    mlflow: bool = typer.Option(True, help="track every run in MLflow (needs the mlflow extra)"),
    algorithm: Optional[str] = typer.Option(None, help="depth/norm/sweep/target: the market algorithm"),
    baseline_norm: Optional[str] = typer.Option(None, help="backprop: norm of every baseline (default: SGD batch, Adam instance)"),
    lrs: Optional[str] = typer.Option(None, help="sweep: learning rates, e.g. 0.03,0.1,0.3"),
    decays: Optional[str] = typer.Option(None, help="sweep: decays, e.g. 1e-4,1e-5"),
    target: Optional[float] = typer.Option(None, help="target: exit 1 unless the final test accuracy reaches this (%)"),
    eval_every: Optional[int] = typer.Option(None, help="steps between evaluations (default: steps / 20)"),
    eval_samples: int = typer.Option(10_000, help="test examples per evaluation during training"),
    smoothing: float = typer.Option(0.5, help="curve smoothing in the PNG (0.5 = the articles' 50%)"),
    plot_only: bool = typer.Option(False, help="train nothing: redraw the PNG and table from the logs of an earlier run"),
    only: Optional[str] = typer.Option(None, help="train only these runs (comma-separated names), draw them with the others' logs"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    data_dir: Optional[str] = typer.Option(None),
    quiet: bool = typer.Option(False, help="no progress bars"),
    json_out: bool = typer.Option(False, "--json", help="print one final JSON line with every run's summary"),
):
    """Run one of the articles' experiments: every run logged (JSON lines, MLflow), then a PNG and a table."""
    from .runs import EXPERIMENTS, RunSize, run_experiment

    if name == "list":
        for exp in EXPERIMENTS.values():
            print(f"{exp.name:9} {exp.title} ({exp.default_steps} steps at scale 1)\n          published: {exp.published}")
        return
    if name not in EXPERIMENTS:
        raise MarketplaceError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    if target is not None and name != "target":
        raise MarketplaceError("--target applies to the 'target' experiment only")
    if not scale > 0:
        raise MarketplaceError(f"--scale must be > 0, got {scale}")
    if steps is not None and steps < 1:
        raise MarketplaceError(f"--steps must be >= 1, got {steps}")
    if batch is not None and batch < 1:
        raise MarketplaceError(f"--batch must be >= 1, got {batch}")
    size = RunSize(steps=steps or EXPERIMENTS[name].default_steps, scale=scale, batch_size=batch,
                   eval_every=eval_every, eval_samples=eval_samples, seed=seed, device=device, data_dir=data_dir)
    given = [a for a in _given_args(name) if a != "--plot-only"]  # the command that trained the runs
    command = " ".join(map(shlex.quote, ["python", f"experiments/{name}.py", *given]))
    result = run_experiment(name, size, out, tracking_uri=tracking_uri, mlflow=mlflow, progress=not quiet,
                            smoothing=smoothing, command=command, plot_only=plot_only,
                            only=only.split(",") if only else None, algorithm=algorithm,
                            baseline_norm=baseline_norm, lrs=floats(lrs, "--lrs"), decays=floats(decays, "--decays"))
    if json_out:
        print(json.dumps({"experiment": name, "png": str(result.png), "table": str(result.table),
                          "runs": result.summaries}), flush=True)
    else:
        print(result.markdown)
    print(f"wrote {result.png} and {result.table}", file=sys.stderr)
    if target is not None:
        (run_name, summary), = list(result.summaries.items())[:1]
        if summary.get("test_accuracy") is None or summary["test_accuracy"] < target:
            print(f"missed the target: {run_name} reached {summary.get('test_accuracy', 0):.2f}% < {target:g}% "
                  f"after {summary.get('steps')} steps", file=sys.stderr)
            raise typer.Exit(1)
        print(f"target met: {run_name} reached {summary['test_accuracy']:.2f}% >= {target:g}%", file=sys.stderr)


def _given_args(name: str) -> list[str]:
    """The options after the experiment's name, for the record in its table (run.py NAME or NAME.py)."""
    argv = sys.argv[1:]
    return argv[1:] if argv[:1] == [name] else argv


def plot(
    runs: List[str] = typer.Argument(..., help="JSON-lines run logs, or directories of them"),
    out: str = typer.Option("plot.png", help="the PNG to write"),
    table: Optional[str] = typer.Option(None, help="also write the markdown table to this file"),
    smoothing: float = typer.Option(0.5, help="exponential smoothing, 0 = raw (0.5 = the articles' 50%)"),
    title: Optional[str] = typer.Option(None),
):
    """Accuracy and loss against steps and wall time (PNG), and a table of milestones (stdout)."""
    from marketplace.io import write_atomic

    from .plot import find_runs, markdown_table, plot_runs

    if not 0.0 <= smoothing < 1.0:
        raise MarketplaceError(f"--smoothing must be in [0, 1), got {smoothing}")
    logs = find_runs(runs)
    png = plot_runs(logs, out, title=title, smoothing=smoothing)
    text = markdown_table(logs)
    if table:
        write_atomic(table, text + "\n")
    print(text)
    print(f"wrote {png}" + (f" and {table}" if table else ""), file=sys.stderr)


def main(command: Callable, argv: list[str] | None = None) -> None:
    """Run `command` (`experiment` or `plot`) on `argv`; a user's mistake prints one line and exits 2."""
    app = typer.Typer(add_completion=False)
    app.command()(command)
    run(app, args=sys.argv[1:] if argv is None else argv, prog_name=sys.argv[0])


def run_script(name: str, argv: list[str]) -> None:
    """`python experiments/NAME.py ARGS` = `python experiments/run.py NAME ARGS`."""
    main(experiment, [name, *argv])
