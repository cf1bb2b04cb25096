"""`marketplace train` and `marketplace evaluate`: the supervised program."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from ..defaults import CLI_CHEAP_VENDORS
from . import app
from .parse import floats, ints, nonfinite_policy, per_spec


@app.command()
def train(
    dataset: str = typer.Option("mnist", help="mnist, fashion-mnist or cifar10 (see --data for your own)"),
    algorithm: str = typer.Option("v2", help="v1 (keep the best path), v2 (reconcile all paths) or adaptive"),
    vendors: str = typer.Option("4,4,4", help="vendors per spec: 4,4,4 = the CNN split 3 ways; 64 = all at once"),
    sampling: Optional[str] = typer.Option(None, help="upstream sampling per spec, 0 = all (default: all)"),
    batch: int = typer.Option(128, help="examples per step"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: 0.15 for v2, 0.003 for v1)"),
    decay: float = typer.Option(1e-5, help="lr <- lr * (1 - decay) every step"),
    probe_scale: float = typer.Option(0.03, help="v2: vendors probe at lr * probe_scale"),
    unit: str = typer.Option("spec", help="v2: unit vector per 'spec' or over the whole 'model'"),
    meta_lr: float = typer.Option(0.1, help="adaptive: relative rate changes tried per step"),
    rate_bounds: Optional[str] = typer.Option(None, help="adaptive: LO,HI keeps the rate within [LO, HI] x --lr (e.g. 0.5,2)"),
    rate_smoothing: float = typer.Option(0.0, help="adaptive: keep an EMA of the chosen rates with this beta (0 = the chosen rate)"),
    cheap_vendors: float = typer.Option(CLI_CHEAP_VENDORS, help="raise vendor counts where a spec is cheap while the step's FLOPs grow at most this much and its largest activation at most 8x (0.1 = 10%: 4,4,4 trains 4x4x64; 0 = exactly --vendors); the first line names the market trained"),
    optimizer: str = typer.Option("sgd", help="v2: the torch.optim optimizer on the estimate: sgd (= V2), momentum, adam or adamw"),
    momentum: float = typer.Option(0.9, help="momentum: the momentum factor"),
    nesterov: bool = typer.Option(False, help="momentum: Nesterov's variant"),
    weight_decay: float = typer.Option(0.0, help="v2: the torch optimizer's weight decay (decoupled for adamw)"),
    schedule: str = typer.Option("constant", help="v2: lr schedule: constant, cosine, step (x0.1 at 1/2 and 3/4) or warmup-cosine"),
    schedule_steps: Optional[int] = typer.Option(None, help="the schedule's horizon (default: --steps); past it the lr stays at its end value"),
    warmup: int = typer.Option(0, help="warmup-cosine: steps of linear warmup"),
    min_lr: float = typer.Option(0.0, help="cosine: the final lr as a fraction of --lr"),
    probe_width: Optional[float] = typer.Option(None, help="v2: fixed probe width instead of lr * probe_scale (use with adam)"),
    attribution: str = typer.Option("zscore", help="v2: path attribution: zscore (V2) or rank (centred ranks)"),
    direction: str = typer.Option("unit", help="v2: unit (V2) or raw (R / probe width, for adam)"),
    antithetic: bool = typer.Option(False, help="v2: vendors in mirrored pairs (delta, -delta)"),
    clip: Optional[float] = typer.Option(None, help="v2: clip the estimate's global norm"),
    rank: int = typer.Option(0, help="vendors of Linear/Conv2d/Embedding weights as rank-R products from their seeds (0 = dense)"),
    steps: Optional[int] = typer.Option(None, help="stop after this many steps"),
    max_seconds: Optional[float] = typer.Option(None, help="stop after this much wall time"),
    seed: int = typer.Option(0, help="seeds the model, the batches and every vendor"),
    device: str = typer.Option("auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ..."),
    eval_every: int = typer.Option(100, help="steps between test evaluations (base weights)"),
    eval_samples: int = typer.Option(2_000, help="test examples used by the evaluations during training (the final one uses all)"),
    checkpoint: Optional[str] = typer.Option(None, help="safetensors file written every --checkpoint-every steps and at the end"),
    checkpoint_every: int = typer.Option(500, help="steps between checkpoints"),
    resume: bool = typer.Option(False, help="continue from --checkpoint if it exists"),
    on_nonfinite: str = typer.Option("stop", help="a NaN/inf loss: 'stop' with an error or 'skip' the update"),
    regenerate_deltas: bool = typer.Option(False, help="regenerate deltas from seeds instead of caching them"),
    log: Optional[str] = typer.Option(None, help="append a JSON line per logged step to this file"),
    data_dir: Optional[str] = typer.Option(None, help="directory with the IDX files (else $MARKETPLACE_DATA_DIR, the cache, a download)"),
    json_out: bool = typer.Option(False, "--json", help="print one final JSON line with the results"),
    quiet: bool = typer.Option(False, help="no progress: only the first line (the market) and the result"),
    # -- your model, your data --
    model: str = typer.Option("beautiful-mnist", help="a preset (beautiful-mnist, mlp, resnet, resnet8, resnet20, "
                              "resnet18) or your factory: pkg.module:build or path/file.py:build"),
    split: Optional[str] = typer.Option(None, help="layer indices where a factory's nn.Sequential is cut into specs, e.g. 3,6"),
    data_file: Optional[str] = typer.Option(None, "--data", help=".npz or .pt file with x_train, y_train, x_test, "
                                            "y_test (replaces --dataset)"),
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
                 regenerate_deltas, data_dir, model, split, data_file, rank=0, **reporting):
    """The TrainConfig of `train`'s options: the one place they become a config (`train-distributed` uses it too).

    reporting: how the command reports (--log, --json, --quiet), not what it trains.
    """
    from ..training import TrainConfig

    return TrainConfig(
        dataset=dataset, algorithm=algorithm, vendors=ints(vendors, "--vendors"),
        sampling=ints(sampling, "--sampling") if sampling else None, batch=batch, lr=lr, decay=decay,
        probe_scale=probe_scale, per_spec=per_spec(unit), meta_lr=meta_lr,
        rate_bounds=floats(rate_bounds, "--rate-bounds"), rate_smoothing=rate_smoothing, steps=steps,
        max_seconds=max_seconds, seed=seed, device=device, eval_every=eval_every, eval_samples=eval_samples,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
        on_nonfinite=nonfinite_policy(on_nonfinite), cache_deltas=not regenerate_deltas, data_dir=data_dir,
        model=model, split=ints(split, "--split") if split else None, data=data_file,
        cheap_vendors=cheap_vendors, optimizer=optimizer, momentum=momentum, nesterov=nesterov,
        weight_decay=weight_decay, schedule=schedule, schedule_steps=schedule_steps, warmup=warmup, min_lr=min_lr,
        probe_width=probe_width, attribution=attribution, direction=direction, antithetic=antithetic, clip=clip,
        rank=rank,
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
    """Test accuracy of a checkpoint's base weights."""
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
    result = {"test_accuracy": acc, "test_loss": loss, "dataset": name, "steps": ckpt.optimizer.get("steps")}
    print(json.dumps(result) if json_out else f"{name} test accuracy {acc:.2f}% (loss {loss:.4f})")
