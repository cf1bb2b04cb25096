"""`marketplace bench`: the market step timed beside a per-vendor loop, backprop and inference."""

from __future__ import annotations

from typing import Optional

import typer

from . import app
from .parse import ints


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
    from ..experiments.speed import run
    from ..machine import resolve_device

    run(resolve_device(device), list(ints(vendors, "--vendors")) if vendors else None, depth, batch, repeats,
        precision, compile, loop, out)
