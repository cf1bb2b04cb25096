"""`marketplace continual ...`: pre-train, run the two published experiments, plot them."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ..errors import MarketplaceError
from . import app
from .parse import ints, per_spec

continual_app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="Continual learning from inference (docs/algorithm.md section 7): a market learns a new class "
         "from the requests it serves, each along one random path.")


@continual_app.command()
def pretrain(
    exclude: str = typer.Option("9", help="classes left out of the loss (comma-separated; '' for none)"),
    dataset: str = typer.Option("mnist"),
    vendors: str = typer.Option("4,4,4", help="vendors per spec"),
    batch: int = typer.Option(128),
    lr: float = typer.Option(0.1),
    decay: float = typer.Option(1e-5),
    probe_scale: float = typer.Option(0.1),
    unit: str = typer.Option("spec", help="'spec' or 'model' unit vector"),
    steps: Optional[int] = typer.Option(None, help="stop after this many steps"),
    max_seconds: Optional[float] = typer.Option(None, help="stop after this much wall time"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    eval_every: int = typer.Option(100),
    eval_samples: int = typer.Option(10_000),
    checkpoint: str = typer.Option("runs/no9.safetensors", help="where the pre-trained market goes"),
    resume: bool = typer.Option(False, help="continue from --checkpoint if it exists"),
    log: Optional[str] = typer.Option(None, help="append a JSON line per logged step to this file"),
    data_dir: Optional[str] = typer.Option(None),
    json_out: bool = typer.Option(False, "--json", help="print one final JSON line"),
    quiet: bool = typer.Option(False, help="no progress bar"),
):
    """V2 pre-training with classes excluded from the loss (the held-out-9 experiment's start)."""
    from ..continual.pretrain import pretrain as run
    from ..training import JsonLog, ProgressBar, TrainConfig

    excluded = ints(exclude, "--exclude") if exclude.strip() else ()
    config = TrainConfig(dataset=dataset, algorithm="v2", vendors=ints(vendors, "--vendors"), batch=batch, lr=lr,
                         decay=decay, probe_scale=probe_scale, per_spec=per_spec(unit), steps=steps,
                         max_seconds=max_seconds, seed=seed, device=device, eval_every=eval_every,
                         eval_samples=eval_samples, checkpoint=checkpoint, resume=resume, data_dir=data_dir)
    hooks = [] if quiet else [ProgressBar()]
    if log:
        hooks.append(JsonLog(log))
    summary = run(config, excluded, hooks)
    if json_out:
        print(json.dumps(summary), flush=True)


def _experiment(
    experiment: str, checkpoint: str, steps: int, old_per_step: int, new_per_step: int, few_shot: bool,
    vendors: str, lr: float, probe_scale: float, unit: str, records: Optional[int], outliers: Optional[float],
    augment: bool, balanced: bool, baseline: bool, attribution: str, eval_every: int, eval_samples: int,
    log_every: int, seed: int,
    device: str, data_dir: Optional[str], log: Optional[str], plot: Optional[str], save: Optional[str],
    checkpoint_every: int, resume: bool, json_out: bool, quiet: bool, mlflow: bool,
) -> None:
    from ..continual.experiment import ContinualConfig, run_experiment
    from ..continual.report import PrintProgress, mlflow_hook, plot_log
    from ..training import JsonLog

    config = ContinualConfig(
        experiment=experiment, checkpoint=checkpoint, steps=steps, old_per_step=old_per_step,
        new_per_step=new_per_step, few_shot=few_shot, vendors=ints(vendors, "--vendors"), lr=lr,
        probe_scale=probe_scale, unit=unit, records=records, outliers=outliers, augment=augment,
        balanced=balanced, baseline=baseline, attribution=attribution, eval_every=eval_every,
        eval_samples=eval_samples, log_every=log_every,
        seed=seed, device=device, data_dir=data_dir, log=log, save=save, checkpoint_every=checkpoint_every,
        resume=resume)
    hooks = [] if quiet else [PrintProgress()]
    if log:
        hooks.append(JsonLog(log))
    if mlflow:
        hooks += mlflow_hook()
    summary = run_experiment(config, hooks)
    if plot:
        if not log:
            raise MarketplaceError("--plot needs --log (the plot is drawn from the log)")
        plot_log(log, plot)
    if json_out:
        print(json.dumps(summary), flush=True)


def _command(experiment: str, default_checkpoint: str, doc: str):
    def command(
        checkpoint: str = typer.Option(default_checkpoint, help="pre-trained V2 checkpoint to start from"),
        steps: int = typer.Option(1000, help="continual-learning steps (one update each)"),
        old_per_step: int = typer.Option(240, help="old-class images served per step"),
        new_per_step: int = typer.Option(16, help="new-class images served per step"),
        few_shot: bool = typer.Option(False, help="draw only from the first old/new images, as the published runs did"),
        vendors: str = typer.Option("4,4,4", help="the serving market"),
        lr: float = typer.Option(1e-2, help="fixed learning rate"),
        probe_scale: float = typer.Option(1.0, help="vendors probe at lr * probe_scale"),
        unit: str = typer.Option("model", help="unit vector over the whole 'model' (published) or per 'spec'"),
        records: Optional[int] = typer.Option(None, help="K, records per update (default: images per step)"),
        outliers: Optional[float] = typer.Option(None, help="drop losses beyond this many standard deviations"),
        augment: bool = typer.Option(False, help="shift old images by up to 2 pixels"),
        balanced: bool = typer.Option(False, help="spread vendors evenly over each batch's requests"),
        baseline: bool = typer.Option(False, help="learn from each path's loss minus the base weights' loss"),
        attribution: str = typer.Option("zscore", help="zscore (V2, as published) or rank (centred ranks)"),
        eval_every: int = typer.Option(500, help="steps between validations (base weights, a fixed subsample)"),
        eval_samples: int = typer.Option(2000, help="old-class validation images each time (the summary uses all)"),
        log_every: int = typer.Option(50, help="steps per logged learning-accuracy window"),
        seed: int = typer.Option(0),
        device: str = typer.Option("auto"),
        data_dir: Optional[str] = typer.Option(None),
        log: Optional[str] = typer.Option(None, help="JSON-lines log of every step"),
        plot: Optional[str] = typer.Option(None, help="PNG of the curves (needs --log)"),
        save: Optional[str] = typer.Option(None, help="the run's checkpoint: market, learner and progress"),
        checkpoint_every: int = typer.Option(1000, help="steps between checkpoints to --save"),
        resume: bool = typer.Option(False, help="continue from --save if it exists"),
        json_out: bool = typer.Option(False, "--json", help="print one final JSON line"),
        quiet: bool = typer.Option(False, help="no progress lines"),
        mlflow: bool = typer.Option(True, help="also log to MLflow when `import mlflow` works"),
    ):
        _experiment(experiment, checkpoint, steps, old_per_step, new_per_step, few_shot, vendors, lr, probe_scale,
                    unit, records, outliers, augment, balanced, baseline, attribution, eval_every, eval_samples,
                    log_every, seed,
                    device, data_dir, log, plot, save, checkpoint_every, resume, json_out, quiet, mlflow)

    command.__doc__ = doc
    return command


continual_app.command("dress")(_command(
    "dress", "runs/digits.safetensors",
    "MNIST digits, then Fashion-MNIST dresses shown as the digit 3, as published (start: a `marketplace train` "
    "checkpoint)."))
continual_app.command("dress-class10")(_command(
    "dress-class10", "runs/digits.safetensors",
    "MNIST digits, then Fashion-MNIST dress as a new class 10 (the head widened to 11 outputs)."))
continual_app.command("nine")(_command(
    "nine", "runs/no9.safetensors",
    "Digits 0-8, then learn 9 (start: a `marketplace continual pretrain --exclude 9` checkpoint)."))


@continual_app.command()
def plot(
    log: str = typer.Argument(..., help="JSON-lines log of a `continual dress|nine` run"),
    out: str = typer.Option(..., "--out", help="PNG to write"),
    title: Optional[str] = typer.Option(None),
):
    """Plot a run's learning and validation curves."""
    from ..continual.report import plot_log

    print(plot_log(log, out, title))


app.add_typer(continual_app, name="continual")
