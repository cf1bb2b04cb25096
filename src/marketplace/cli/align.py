"""`marketplace align`: how well the market's direction points down the true gradient."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ..errors import MarketplaceError
from . import app
from .parse import ints
from .progress import progress


@app.command()
def align(
    checkpoint: Optional[str] = typer.Option(None, help="a `marketplace train` checkpoint (default: the initial weights)"),
    vendors: str = typer.Option("4,4,4", help="vendors per spec of the market measured (any depth 1-3; "
                                "a checkpoint's weights are measured in this market)"),
    sampling: Optional[str] = typer.Option(None, help="upstream sampling per spec, 0 = all (default: all)"),
    batch: int = typer.Option(128, help="examples per batch"),
    batches: int = typer.Option(8, help="batches (each with fresh vendors) to average over"),
    lr: float = typer.Option(0.15, help="learning rate: vendors probe at lr x probe scale"),
    probe_scale: float = typer.Option(0.03, help="vendors probe at lr x probe scale"),
    estimator: str = typer.Option("all", help="zscore (V2), rank, zscore-model (whole-model unit), best (V1), or all"),
    seed: int = typer.Option(0, help="seeds the initial weights, the batches and the vendors"),
    dataset: str = typer.Option("mnist", help="mnist or fashion-mnist"),
    device: str = typer.Option("auto", help="auto (CUDA if present), cpu, cuda"),
    data_dir: Optional[str] = typer.Option(None, help="directory with the IDX files"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON line with every figure"),
):
    """Cosine between the market's V2 direction and the true negative gradient, per spec and whole model.

    Beside each: the best any weighting of the same vendor deltas could reach
    (least squares onto their span) and the expectation for a random
    subspace of as many directions, about sqrt(n/d). See docs/alignment.md.
    """
    from .. import data
    from ..diagnostics.grid import ESTIMATORS, Cell, measure
    from ..machine import resolve_device
    from ..training import load_checkpoint, market_from_checkpoint

    names = tuple(ESTIMATORS) if estimator == "all" else (estimator,)
    if any(n not in ESTIMATORS for n in names):
        raise MarketplaceError(f"--estimator must be one of {', '.join(ESTIMATORS)} or all, got {estimator!r}")
    counts = ints(vendors, "--vendors")
    if not 1 <= len(counts) <= 3 or min(counts) < 1:
        raise MarketplaceError(f"--vendors needs 1 to 3 counts of at least 1, got {vendors!r}")
    if batch < 1 or batches < 1:
        raise MarketplaceError(f"--batch and --batches must be >= 1, got {batch} and {batches}")
    cell = Cell("cli", counts, ints(sampling, "--sampling") if sampling else (), batch, lr, probe_scale)
    dev = resolve_device(device)
    weights = market_from_checkpoint(load_checkpoint(checkpoint), checkpoint, dev) if checkpoint else None
    x, y = data.load_data(dataset, "train", data_dir, dev)
    with progress("align: batch", batches) as tick:  # ~30 s at the defaults: say how far it is, on stderr
        row = measure(cell, weights, x, y, batches, seed, names, progress=tick)
    row["state"] = checkpoint or "init"
    if json_out:
        print(json.dumps(row), flush=True)
        return
    print(f"{cell.name}, {row['paths']} paths, {'weights of ' + checkpoint if checkpoint else 'initial weights'}, "
          f"mean over {batches} batches (± standard error)")
    first = row["estimators"][names[0]]["mean"]
    print(f"  probe directions n_k {first['directions']}, parameters d_k {first['params']}")
    print(f"  best in span   per spec {_fmt(first['best_cosine'])}  whole {first['whole']['best_cosine']:.4f}")
    print(f"  random subsp.  per spec {_fmt(first['random_cosine'])}  whole {first['whole']['random_cosine']:.4f}")
    for name in names:
        m, s = row["estimators"][name]["mean"], row["estimators"][name]["stderr"]
        print(f"  {name:<14} per spec {_fmt(m['cosine'])}  whole {m['whole']['cosine']:.4f} "
              f"± {s['whole']['cosine']:.4f}")


def _fmt(values) -> str:
    return " ".join(f"{v:.4f}" for v in values)
