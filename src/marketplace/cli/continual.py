"""`marketplace continual ...`: pre-train, run the two published experiments, plot them."""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import typer

from ..continual.config import ContinualConfig
from ..continual.pretrain import PRETRAIN
from ..errors import MarketplaceError
from ..training.config import TrainConfig
from . import app
from . import options as opt
from .options import option
from .parse import ints, per_spec

continual_app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="Continual learning from inference (docs/algorithm.md section 7): a market learns a new class "
         "from the requests it serves, each along one random path.")


@continual_app.command()
def pretrain(
    exclude: str = typer.Option("9", help="classes left out of the loss (comma-separated; '' for none)"),
    dataset: str = opt.dataset(PRETRAIN),
    vendors: str = opt.vendors(PRETRAIN),
    batch: int = opt.batch(PRETRAIN),
    lr: float = opt.lr(PRETRAIN),
    decay: float = opt.decay(PRETRAIN),
    probe_scale: float = opt.probe_scale(PRETRAIN),
    unit: str = opt.unit(PRETRAIN),
    steps: Optional[int] = opt.steps(PRETRAIN),
    max_seconds: Optional[float] = opt.max_seconds(PRETRAIN),
    seed: int = opt.seed(PRETRAIN),
    device: str = opt.device(PRETRAIN),
    eval_every: int = opt.eval_every(PRETRAIN),
    eval_samples: int = opt.eval_samples(PRETRAIN),
    checkpoint: str = option(PRETRAIN, "checkpoint", "where the pre-trained market goes"),
    resume: bool = opt.resume(PRETRAIN),
    log: Optional[str] = opt.log(),
    data_dir: Optional[str] = opt.data_dir(PRETRAIN),
    json_out: bool = opt.json_out(),
    quiet: bool = opt.quiet(),
):
    """V2 pre-training with classes excluded from the loss (the held-out-9 experiment's start)."""
    options = dict(locals())  # the options as given, before anything else is bound here
    from ..continual.pretrain import pretrain as run
    from ..training import JsonLog, ProgressBar

    excluded = ints(exclude, "--exclude") if exclude.strip() else ()
    hooks = [] if quiet else [ProgressBar()]
    if log:
        hooks.append(JsonLog(log))
    summary = run(pretrain_config(**options), excluded, hooks)
    if json_out:
        print(json.dumps(summary), flush=True)


def pretrain_config(*, vendors: str, unit: str, exclude, log, json_out, quiet, **settings) -> TrainConfig:
    """The TrainConfig of `pretrain`'s options: PRETRAIN with those given."""
    return dataclasses.replace(PRETRAIN, vendors=ints(vendors, "--vendors"), per_spec=per_spec(unit), **settings)


def continual_config(experiment: str, *, vendors: str, plot, json_out, quiet, mlflow, **settings) -> ContinualConfig:
    """The ContinualConfig of an experiment command's options."""
    return ContinualConfig(experiment=experiment, vendors=ints(vendors, "--vendors"), **settings)


def _experiment(experiment: str, options: dict) -> None:
    from ..continual.experiment import run_experiment
    from ..continual.report import PrintProgress, mlflow_hook, plot_log
    from ..training import JsonLog

    config = continual_config(experiment, **options)
    log, plot = options["log"], options["plot"]
    hooks = [] if options["quiet"] else [PrintProgress()]
    if log:
        hooks.append(JsonLog(log))
    if options["mlflow"]:
        hooks += mlflow_hook()
    summary = run_experiment(config, hooks)
    if plot:
        if not log:
            raise MarketplaceError("--plot needs --log (the plot is drawn from the log)")
        plot_log(log, plot)
    if options["json_out"]:
        print(json.dumps(summary), flush=True)


def _command(experiment: str, default_checkpoint: str, doc: str):
    D = ContinualConfig(experiment=experiment, checkpoint=default_checkpoint)

    def command(
        checkpoint: str = option(D, "checkpoint", "pre-trained V2 checkpoint to start from"),
        steps: int = opt.steps(D, "continual-learning steps (one update each)"),
        old_per_step: int = option(D, "old_per_step", "old-class images served per step"),
        new_per_step: int = option(D, "new_per_step", "new-class images served per step"),
        few_shot: bool = option(D, "few_shot", "draw only from the first old/new images, as the published runs did"),
        vendors: str = opt.vendors(D, "the serving market"),
        lr: float = opt.lr(D, "learning rate (fixed unless --lr-end)"),
        lr_end: Optional[float] = option(D, "lr_end", "decay the rate geometrically to this by the last step"),
        lr_hold: int = option(D, "lr_hold", "steps at --lr before the decay to --lr-end starts"),
        probe_scale: float = opt.probe_scale(D),
        unit: str = opt.unit(D, "unit vector over the whole 'model' (published) or per 'spec'"),
        records: Optional[int] = opt.records(D, "K, records per update (default: images per step)"),
        outliers: Optional[float] = option(D, "outliers", "drop losses beyond this many standard deviations"),
        augment: bool = option(D, "augment", "shift old images by up to 2 pixels"),
        balanced: bool = opt.balanced(D, "spread vendors evenly over each batch's requests (no padding); "
                                                 "--no-balanced: independent paths, as published"),
        baseline: bool = opt.baseline(D),
        mirrored: bool = opt.mirrored(D),
        attribution: str = opt.attribution(D, "rank (centred ranks: bounded influence per record) or "
                                              "zscore (V2, as published)"),
        learn: str = option(D, "learn", "which weights learn: all, or partial (the biases, the norms and the head; "
                                        "the kernels frozen)"),
        average: Optional[int] = option(D, "average", "validate the weights averaged over about N steps (an "
                                                      "exponential moving average; the served weights are logged too)"),
        eval_every: int = opt.eval_every(D, "steps between validations (base weights, a fixed subsample)"),
        eval_samples: int = opt.eval_samples(D, "old-class validation images each time (the summary uses all)"),
        log_every: int = option(D, "log_every", "steps per logged learning-accuracy window"),
        seed: int = opt.seed(D, "seeds the vendors and the serving paths"),
        device: str = opt.device(D),
        data_dir: Optional[str] = opt.data_dir(D),
        log: Optional[str] = option(D, "log", "JSON-lines log of every step"),
        plot: Optional[str] = typer.Option(None, help="PNG of the curves (needs --log)"),
        save: Optional[str] = option(D, "save", "the run's checkpoint: market, learner and progress"),
        checkpoint_every: int = opt.checkpoint_every(D, "steps between checkpoints to --save"),
        resume: bool = opt.resume(D, "continue from --save if it exists"),
        json_out: bool = opt.json_out("print one final JSON line"),
        quiet: bool = opt.quiet("no progress lines"),
        mlflow: bool = typer.Option(True, help="also log to MLflow when `import mlflow` works"),
    ):
        options = {k: v for k, v in locals().items() if k != "experiment"}  # the options: not the closure's name
        _experiment(experiment, options)

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
    "nine", PRETRAIN.checkpoint,
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
