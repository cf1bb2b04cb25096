"""The alignment grid of docs/alignment.md: markets x estimators, at initialisation and trained.

A cell is a market (vendors, sampling), a batch size and a probe scale;
every cell is measured with every estimator on the same batches and
vendors (`compare_alignment`), at the initial weights and at a trained
checkpoint. `run_grid` returns plain dicts; `format_table` and `plot` turn
them into results/alignment/.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from .. import data
from ..cost import beautiful_mnist_cost
from ..errors import MarketplaceError
from ..functional import centered_rank_attribution, standardized_attribution
from ..io import write_atomic
from ..market import Market
from ..models import beautiful_mnist
from ..optim import V2
from ..training.loop import batch_indices
from .alignment import best_path_attribution, compare_alignment

# name -> (attribution, per-spec unit vector); "zscore" is V2 as published, "best" is V1's step.
ESTIMATORS: dict[str, tuple[Callable, bool]] = {
    "zscore": (standardized_attribution, True),
    "rank": (centered_rank_attribution, True),
    "zscore-model": (standardized_attribution, False),
    "best": (best_path_attribution, True),
}


@dataclass(frozen=True)
class Cell:
    """One market to measure. lr x probe_scale is the probe width, as in `V2`."""

    group: str  # which question the cell belongs to: vendors, depth, sampling, batch, probe
    vendors: tuple[int, ...]
    sampling: tuple[int, ...] = ()
    batch: int = 128
    lr: float = 0.15
    probe_scale: float = 0.03

    @property
    def name(self) -> str:
        market = "x".join(map(str, self.vendors))
        sampling = f" S={','.join(map(str, self.sampling))}" if any(self.sampling) else ""
        return f"{market}{sampling} b{self.batch} p{self.probe_scale:g}"


def default_cells() -> list[Cell]:
    """The alignment grid: vendors 2-16, depth 1-3, full and partial sampling, batch, probe width.

    The depth cells pair markets of about equal compute per step (cost model of section 3):
    depth 1 x 8 vendors ~ 4x4 ~ 4x4x4, and depth 1 x 24 ~ 8x8x8.
    """
    return [
        *[Cell("vendors", (m, m, m)) for m in (2, 4, 8, 16)],
        Cell("depth", (8,)), Cell("depth", (4, 4)), Cell("depth", (24,)),
        Cell("sampling", (8, 8, 8), (0, 2, 2)),
        Cell("batch", (4, 4, 4), batch=32), Cell("batch", (4, 4, 4), batch=256),
        Cell("probe", (4, 4, 4), probe_scale=0.01), Cell("probe", (4, 4, 4), probe_scale=0.1),
    ]


def load_weights(market: Market, source: torch.nn.Module) -> None:
    """Copy the CNN's weights from a market of any depth, parameter by parameter in module order.

    The beautiful-MNIST CNN has the same layers in the same order whatever
    its split into specs, so a checkpoint trained as 4x4x4 can be measured
    as a depth-1 or depth-2 market too.
    """
    src = [p.detach() for p in source.parameters()]
    dst = list(market.parameters())
    if len(src) != len(dst) or any(s.shape != d.shape for s, d in zip(src, dst)):
        raise MarketplaceError(f"the weights ({len(src)} tensors) do not fit this market ({len(dst)} tensors)")
    with torch.no_grad():
        for d, s in zip(dst, src):
            d.copy_(s.to(d.device, d.dtype))


def build(cell: Cell, weights: torch.nn.Module | None, seed: int, device: torch.device) -> tuple[Market, V2]:
    """The cell's market and a V2 optimizer for its vendors.

    The weights come from `seed` (initialisation) or, when given, from the market `weights`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        specs = beautiful_mnist(depth=len(cell.vendors))
    market = Market(specs, list(cell.vendors), list(cell.sampling) or 0).to(device)
    if weights is not None:
        load_weights(market, weights)
    return market, V2(market, lr=cell.lr, probe_scale=cell.probe_scale, seed=seed)


def measure(cell: Cell, weights, x: torch.Tensor, y: torch.Tensor, batches: int, seed: int,
            estimators: Sequence[str] = tuple(ESTIMATORS), progress: Callable[[], None] = lambda: None) -> dict:
    """Every estimator on one cell: mean and standard error over `batches` batches of the training set.

    progress() is called as each batch begins (a long measurement says how far it is).
    """
    market, optimizer = build(cell, weights, seed, x.device)
    picks = [batch_indices(seed, i, len(x), cell.batch).to(x.device) for i in range(batches)]
    start = time.perf_counter()
    summaries = compare_alignment(market, optimizer, _announced(((x[i], y[i]) for i in picks), progress),
                                  {name: ESTIMATORS[name] for name in estimators})
    cost = beautiful_mnist_cost(cell.vendors, list(cell.sampling) or 0, cell.batch)
    return {**asdict(cell), "name": cell.name, "paths": market.num_paths, "step_gflop": cost.flops / 1e9,
            "seconds": round(time.perf_counter() - start, 2),
            "estimators": {name: s.as_dict() for name, s in summaries.items()}}


def _announced(items, progress: Callable[[], None]):
    for item in items:
        progress()
        yield item


def run_grid(cells: Sequence[Cell], states: dict[str, torch.nn.Module | None], batches: int, seed: int,
             device: torch.device, dataset: str = "mnist", data_dir: str | None = None,
             log: Callable[[str], None] = print, done: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Measure every cell in every state (name -> a market holding the weights, None = initialisation).

    done(rows) is called after every cell (to save partial results of a long grid).
    """
    x, y = data.load_data(dataset, "train", data_dir, device)
    rows = []
    for state, weights in states.items():
        for cell in cells:
            row = {"state": state, **measure(cell, weights, x, y, batches, seed)}
            z = row["estimators"]["zscore"]["mean"]
            log(f"{state:>5} {cell.name:<24} whole cos {z['whole']['cosine']:.4f} "
                f"best {z['whole']['best_cosine']:.4f} ({row['seconds']:.0f} s)")
            rows.append(row)
            if done is not None:
                done(rows)
    return rows


def _triple(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.4f}" for v in values)


def format_table(rows: Sequence[dict]) -> str:
    """Markdown: per cell and state, the z-score (V2) cosines per spec and whole, beside the bounds."""
    head = ("| state | market | paths | V2 cos per spec | best in span per spec | random subspace per spec "
            "| V2 cos whole | best whole | best with spec units | random whole | V2 / best | ranks whole "
            "| model-unit whole | V1 (best path) whole |\n|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        est = r["estimators"]
        z = est["zscore"]["mean"]
        zs = est["zscore"]["stderr"]["whole"]["cosine"]
        other = lambda name: f"{est[name]['mean']['whole']['cosine']:.4f}" if name in est else "-"
        ratio = z["whole"]["cosine"] / z["whole"]["best_cosine"] if z["whole"]["best_cosine"] else 0.0
        lines.append(
            f"| {r['state']} | {r['name']} | {r['paths']:,} | {_triple(z['cosine'])} | {_triple(z['best_cosine'])} "
            f"| {_triple(z['random_cosine'])} | {z['whole']['cosine']:.4f} ± {zs:.4f} | {z['whole']['best_cosine']:.4f} "
            f"| {z['whole']['best_cosine_spec_unit']:.4f} "
            f"| {z['whole']['random_cosine']:.4f} | {ratio:.2f} | {other('rank')} | {other('zscore-model')} "
            f"| {other('best')} |")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Whole-model cosine against probe directions: V2, the best in the span, the random-subspace curve."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    states = list(dict.fromkeys(r["state"] for r in rows))
    for ax, state in zip(axes, states):
        mine = [r for r in rows if r["state"] == state]
        d = mine[0]["estimators"]["zscore"]["mean"]["whole"]["params"]
        ns = [r["estimators"]["zscore"]["mean"]["whole"]["directions"] for r in mine]
        curve = sorted(set(range(1, int(max(ns)) + 2)))
        ax.plot(curve, [math.sqrt(n / d) for n in curve], color="grey", lw=1, label="random subspace, sqrt(n/d)")
        for group, marker in (("vendors", "o"), ("depth", "s"), ("sampling", "^"), ("batch", "D"), ("probe", "v")):
            sel = [r for r in mine if r["group"] == group]
            if not sel:
                continue
            n = [r["estimators"]["zscore"]["mean"]["whole"]["directions"] for r in sel]
            ax.scatter(n, [r["estimators"]["zscore"]["mean"]["whole"]["cosine"] for r in sel], marker=marker,
                       color="C0", label=f"V2 ({group})")
            ax.scatter(n, [r["estimators"]["zscore"]["mean"]["whole"]["best_cosine"] for r in sel], marker=marker,
                       facecolors="none", edgecolors="C1", label=f"best in span ({group})")
            for r, xn in zip(sel, n):
                market, batch, probe = r["name"].split(" b")[0], f"b{r['batch']}", f"p{r['probe_scale']:g}"
                label = {"batch": batch, "probe": probe}.get(group, market)
                ax.annotate(label, (xn, r["estimators"]["zscore"]["mean"]["whole"]["cosine"]),
                            fontsize=6, xytext=(4, -3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("independent probe directions n = sum_k (M_k - 1)")
        ax.set_title(f"{state} weights")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("cosine with -grad L (whole model)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=4)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())

