"""`marketplace train` and `marketplace evaluate`: the supervised program."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from ..defaults import CLI_CHEAP_VENDORS
from ..training.config import TrainConfig
from . import app
from . import options as opt
from .options import join, option
from .parse import floats, ints, nonfinite_policy, per_spec, rates


# The command's defaults: TrainConfig's, but the CLI buys cheap specs more vendors (defaults.CLI_CHEAP_VENDORS).
DEFAULTS = TrainConfig(cheap_vendors=CLI_CHEAP_VENDORS)
D = DEFAULTS


@app.command()
def train(
    dataset: str = opt.dataset(D),
    algorithm: str = option(D, "algorithm", "v1 (keep the best path), v2 (reconcile all paths) or adaptive"),
    vendors: str = opt.vendors(D, "vendors per spec: 4,4,4 = the CNN split 3 ways; 64 = all at once"),
    sampling: Optional[str] = option(D, "sampling", "upstream sampling per spec, 0 = all (default: all)", show=join),
    batch: int = opt.batch(D),
    lr: Optional[str] = opt.lr(D, "learning rate, one or one per spec (e.g. 0.15,0.15,0.075; default: 0.15 for "
                                  "v2, half that for a spec --cheap-vendors raised; 0.003 for v1)"),
    decay: float = opt.decay(D),
    probe_scale: float = opt.probe_scale(D, "v2: vendors probe at lr * probe_scale"),
    unit: str = opt.unit(D, "v2: unit vector per 'spec' or over the whole 'model'"),
    meta_lr: float = option(D, "meta_lr", "adaptive: relative rate changes tried per step"),
    rate_bounds: Optional[str] = option(D, "rate_bounds", "adaptive: LO,HI keeps the rate within [LO, HI] x --lr "
                                        "(e.g. 0.5,2)", show=join),
    rate_smoothing: float = option(D, "rate_smoothing", "adaptive: keep an EMA of the chosen rates with this beta "
                                   "(0 = the chosen rate)"),
    cheap_vendors: float = option(D, "cheap_vendors", "raise vendor counts where a spec is cheap while the step's "
                                  "FLOPs grow at most this much and its largest activation at most 8x (0.1 = 10%: "
                                  "4,4,4 trains 4x4x64; 0 = exactly --vendors); the first line names the market "
                                  "trained"),
    optimizer: str = option(D, "optimizer", "v2: the torch.optim optimizer on the estimate: sgd (= V2), momentum, "
                            "adam or adamw"),
    momentum: float = option(D, "momentum", "momentum: the momentum factor"),
    nesterov: bool = option(D, "nesterov", "momentum: Nesterov's variant"),
    weight_decay: float = option(D, "weight_decay", "v2: the torch optimizer's weight decay (decoupled for adamw)"),
    schedule: str = option(D, "schedule", "v2: lr schedule: constant, cosine, step (x0.1 at 1/2 and 3/4) or "
                           "warmup-cosine"),
    schedule_steps: Optional[int] = option(D, "schedule_steps", "the schedule's horizon (default: --steps, else "
                                           "--max-seconds on the clock); past it the lr stays at its end value"),
    warmup: int = option(D, "warmup", "warmup-cosine: steps of linear warmup"),
    min_lr: float = option(D, "min_lr", "cosine: the final lr as a fraction of --lr"),
    probe_width: Optional[float] = option(D, "probe_width", "v2: fixed probe width instead of lr * probe_scale "
                                          "(use with adam)"),
    attribution: str = opt.attribution(D, "v2: path attribution: zscore (V2) or rank (centred ranks)"),
    direction: str = option(D, "direction", "v2: unit (V2) or raw (R / probe width, for adam)"),
    antithetic: bool = option(D, "antithetic", "v2: vendors in mirrored pairs (delta, -delta)"),
    clip: Optional[float] = option(D, "clip", "v2: clip the estimate's global norm"),
    rank: int = option(D, "rank", "vendors of Linear/Conv2d/Embedding weights as rank-R products from their seeds "
                       "(0 = dense)"),
    average: Optional[int] = option(D, "average", "score and save the weights averaged over about N steps (an "
                                    "exponential moving average; the market steps from its own weights)"),
    steps: Optional[int] = opt.steps(D),
    max_seconds: Optional[float] = opt.max_seconds(D),
    seed: int = opt.seed(D),
    device: str = opt.device(D),
    eval_every: int = opt.eval_every(D),
    eval_samples: int = opt.eval_samples(D),
    checkpoint: Optional[str] = option(D, "checkpoint", "safetensors file written every --checkpoint-every steps "
                                       "and at the end"),
    checkpoint_every: int = opt.checkpoint_every(D),
    resume: bool = opt.resume(D),
    on_nonfinite: str = option(D, "on_nonfinite", "a NaN/inf loss: 'stop' with an error or 'skip' the update",
                               show=lambda policy: "stop" if policy == "raise" else policy),
    regenerate_deltas: bool = option(D, "cache_deltas", "regenerate deltas from seeds instead of caching them",
                                     "--regenerate-deltas/--no-regenerate-deltas",
                                     show=lambda cache: not cache),
    log: Optional[str] = opt.log(),
    data_dir: Optional[str] = opt.data_dir(D),
    json_out: bool = opt.json_out(),
    quiet: bool = opt.quiet("no progress: only the first line (the market) and the result"),
    # -- your model, your data --
    model: str = option(D, "model", "a preset (beautiful-mnist, mlp, resnet, resnet8, resnet20, resnet18) or your "
                        "factory: pkg.module:build or path/file.py:build"),
    split: Optional[str] = option(D, "split", "layer indices where a factory's nn.Sequential is cut into specs, "
                                  "e.g. 3,6", show=join),
    data_file: Optional[str] = option(D, "data", ".npz or .pt file with x_train, y_train, x_test, y_test "
                                      "(replaces --dataset)", "--data"),
):
    """Train a model as a market (the beautiful-MNIST CNN by default) and report test accuracy.

    The first line names the market trained, and why if it is not --vendors.
    """
    options = dict(locals())  # the options as given, before anything else is bound here
    from ..training import JsonLog, ProgressBar, train as run
    from ..training.hooks import RunLines

    config = train_config(**options)
    # With --json, stdout holds only the JSON line: the human lines go to stderr. The bar prints the result itself.
    hooks = [RunLines(sys.stderr if json_out else None, last=quiet and not json_out)]
    hooks += [] if quiet else [ProgressBar()]
    if log:
        hooks.append(JsonLog(log))
    import torch

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        from ..memory import reuse_freed_memory

        reuse_freed_memory()  # a CPU step's products then reuse freed pages instead of faulting in new ones
    summary = run(config, hooks)
    summary["vendors_asked"] = list(config.vendors)  # summary["vendors"]: the market trained
    if json_out:
        print(json.dumps(summary), flush=True)


def train_config(*, dataset, algorithm, vendors, sampling, batch, lr, decay, probe_scale, unit, meta_lr, rate_bounds,
                 rate_smoothing, cheap_vendors, optimizer, momentum, nesterov, weight_decay, schedule, schedule_steps,
                 warmup, min_lr, probe_width, attribution, direction, antithetic, clip, steps, max_seconds, seed,
                 device, eval_every, eval_samples, checkpoint, checkpoint_every, resume, on_nonfinite,
                 regenerate_deltas, data_dir, model, split, data_file, rank=0, average=None, **reporting):
    """The TrainConfig of `train`'s options: the one place they become a config (`train-distributed` uses it too).

    reporting: how the command reports (--log, --json, --quiet), not what it trains.
    """
    return TrainConfig(
        dataset=dataset, algorithm=algorithm, vendors=ints(vendors, "--vendors"),
        sampling=ints(sampling, "--sampling") if sampling else None, batch=batch, lr=rates(lr), decay=decay,
        probe_scale=probe_scale, per_spec=per_spec(unit), meta_lr=meta_lr,
        rate_bounds=floats(rate_bounds, "--rate-bounds"), rate_smoothing=rate_smoothing, steps=steps,
        max_seconds=max_seconds, seed=seed, device=device, eval_every=eval_every, eval_samples=eval_samples,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
        on_nonfinite=nonfinite_policy(on_nonfinite), cache_deltas=not regenerate_deltas, data_dir=data_dir,
        model=model, split=ints(split, "--split") if split else None, data=data_file,
        cheap_vendors=cheap_vendors, optimizer=optimizer, momentum=momentum, nesterov=nesterov,
        weight_decay=weight_decay, schedule=schedule, schedule_steps=schedule_steps, warmup=warmup, min_lr=min_lr,
        probe_width=probe_width, attribution=attribution, direction=direction, antithetic=antithetic, clip=clip,
        rank=rank, average=average,
    )


@app.command()
def evaluate(
    checkpoint: str = typer.Argument(..., help="a checkpoint written by `marketplace train`"),
    dataset: Optional[str] = typer.Option(None, help="default: the dataset it was trained on"),
    data_file: Optional[str] = typer.Option(None, "--data", help="a .npz/.pt data file (default: the one it was trained on)"),
    device: str = typer.Option("auto"),
    data_dir: Optional[str] = typer.Option(None),
    json_out: bool = typer.Option(False, "--json"),
):
    """Test accuracy of a checkpoint's base weights (their average, for a run with --average)."""
    from .. import data
    from ..machine import resolve_device
    from ..training import accuracy, load_checkpoint, market_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    market = market_from_checkpoint(ckpt, checkpoint, dev)
    saved = ckpt.meta.get("config", {})
    path = data_file or (saved.get("data") if dataset is None else None)
    if path:
        name = path
        x, y = data.load_file(path).inputs("test", dev)
    else:
        name = dataset or saved.get("dataset", "mnist")
        x, y = data.load_data(name, "test", data_dir, dev)
    acc, loss = accuracy(market, x, y)
    averaged = saved.get("average")
    result = {"test_accuracy": acc, "test_loss": loss, "dataset": name, "steps": ckpt.optimizer.get("steps"),
              **({"averaged_over_steps": averaged} if averaged else {})}
    weights = f" (weights averaged over about {averaged:,} steps)" if averaged else ""
    print(json.dumps(result) if json_out else f"{name} test accuracy {acc:.2f}%{weights} (loss {loss:.4f})")
