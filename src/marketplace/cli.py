"""The `marketplace` command line: train and evaluate markets."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from .errors import MarketplaceError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train neural networks with forward passes only (the Marketplace algorithm).")


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise MarketplaceError(f"{name} takes comma-separated integers like 4,4,4, got {text!r}") from None
    return values


@app.command()
def train(
    dataset: str = typer.Option("mnist", help="mnist or fashion-mnist"),
    algorithm: str = typer.Option("v2", help="v1 (keep the best path), v2 (reconcile all paths) or adaptive"),
    vendors: str = typer.Option("4,4,4", help="vendors per spec: 4,4,4 = the CNN split 3 ways; 64 = all at once"),
    sampling: Optional[str] = typer.Option(None, help="upstream sampling per spec, 0 = all (default: all)"),
    batch: int = typer.Option(128, help="examples per step"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: 0.15 for v2, 0.003 for v1)"),
    decay: float = typer.Option(1e-5, help="lr <- lr * (1 - decay) every step"),
    probe_scale: float = typer.Option(0.03, help="v2: vendors probe at lr * probe_scale"),
    unit: str = typer.Option("spec", help="v2: unit vector per 'spec' or over the whole 'model'"),
    meta_lr: float = typer.Option(0.1, help="adaptive: relative rate changes tried per step"),
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
    quiet: bool = typer.Option(False, help="no progress bar"),
):
    """Train the beautiful-MNIST CNN as a market and report test accuracy."""
    from .progress import JsonLog, ProgressBar
    from .train import TrainConfig, train as run

    if unit not in ("spec", "model"):
        raise MarketplaceError(f"--unit must be 'spec' or 'model', got {unit!r}")
    if on_nonfinite not in ("stop", "skip"):
        raise MarketplaceError(f"--on-nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
    config = TrainConfig(
        dataset=dataset, algorithm=algorithm, vendors=_ints(vendors, "--vendors"),
        sampling=_ints(sampling, "--sampling") if sampling else None, batch=batch, lr=lr, decay=decay,
        probe_scale=probe_scale, per_spec=unit == "spec", meta_lr=meta_lr, steps=steps,
        max_seconds=max_seconds, seed=seed, device=device, eval_every=eval_every, eval_samples=eval_samples,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
        on_nonfinite="raise" if on_nonfinite == "stop" else "skip", cache_deltas=not regenerate_deltas,
        data_dir=data_dir,
    )
    hooks = [] if quiet else [ProgressBar()]
    if log:
        hooks.append(JsonLog(log))
    summary = run(config, hooks)
    if json_out:
        print(json.dumps(summary), flush=True)


@app.command()
def evaluate(
    checkpoint: str = typer.Argument(..., help="a checkpoint written by `marketplace train`"),
    dataset: Optional[str] = typer.Option(None, help="default: the dataset it was trained on"),
    device: str = typer.Option("auto"),
    data_dir: Optional[str] = typer.Option(None),
    json_out: bool = typer.Option(False, "--json"),
):
    """Test accuracy of a checkpoint's base weights."""
    from .checkpoint import load_checkpoint
    from .train import TrainConfig, accuracy, build_market, load_data, resolve_device

    ckpt = load_checkpoint(checkpoint)
    saved = ckpt.meta.get("config", {})
    config = TrainConfig(vendors=tuple(saved.get("vendors", (4, 4, 4))), sampling=saved.get("sampling"),
                         norm=saved.get("norm", "instance"), batch=saved.get("batch", 128))
    dev = resolve_device(device)
    market = build_market(config, dev)
    try:
        market.load_state_dict(ckpt.model)
    except RuntimeError as e:
        raise MarketplaceError(f"{checkpoint} does not hold a beautiful-MNIST market: {str(e).splitlines()[0]}")
    name = dataset or saved.get("dataset", "mnist")
    x, y = load_data(name, "test", data_dir, dev)
    acc, loss = accuracy(market, x, y)
    result = {"test_accuracy": acc, "test_loss": loss, "dataset": name, "steps": ckpt.optimizer.get("steps")}
    print(json.dumps(result) if json_out else f"{name} test accuracy {acc:.2f}% (loss {loss:.4f})")


@app.command()
def bench(
    device: str = typer.Option("auto", help="auto (CUDA if present), cpu, cuda"),
    vendors: Optional[str] = typer.Option(None, help="vendor counts per spec to try (default 4,8,16 on CUDA, 2,4 on CPU)"),
    depth: int = typer.Option(3, help="market depth: the CNN split 1, 2 or 3 ways"),
    batch: Optional[int] = typer.Option(None, help="default 512 on CUDA, 64 on CPU"),
    repeats: Optional[int] = typer.Option(None, help="timed repeats (median reported)"),
    precision: str = typer.Option("auto", help="auto (bf16 on CUDA), fp32, bf16, fp16"),
    compile: bool = typer.Option(False, help="torch.compile each spec's vendor batch"),
    loop: bool = typer.Option(True, help="also time the naive per-vendor loop"),
    out: Optional[str] = typer.Option(None, help="JSON path (default benchmarks/results/step_speed_<device>.json)"),
):
    """Time the market step against a per-vendor loop, backprop SGD and plain inference."""
    from .bench import run
    from .train import resolve_device

    run(resolve_device(device), list(_ints(vendors, "--vendors")) if vendors else None, depth, batch, repeats,
        precision, compile, loop, out)


# Feature modules add their commands here: each exposes register(app).
_COMMAND_MODULES: tuple[str, ...] = ("distributed_cli", "continual_cli", "experiments_cli")


def _register_commands() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f".{name}", __package__).register(app)


def main() -> None:
    """Entry point: a user's mistake prints one line, not a traceback.

    click reports its own usage errors (exit 2); the library's errors on bad
    input (MarketplaceError, and ValueError from argument checks) surface here.
    """
    try:
        _register_commands()
        app()
    except (MarketplaceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
