"""`marketplace bench`: the market step timed beside a per-vendor loop, backprop and inference."""

from __future__ import annotations

from typing import Optional

import typer

from . import app
from .parse import fresh_dir, ints

FORMULATION_ROWS = "vmap,grouped,wide"  # what --formulations all times


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
    formulations: Optional[str] = typer.Option(
        None, help="market-step variants side by side, comma-separated, e.g. 'vmap,grouped,wide,wide/bf16,"
                   "wide/compile=max-autotune,wide/nocl,wide/regen'; 'all' = vmap,grouped,wide"),
    philox: bool = typer.Option(False, help="also time expanding the deltas from their seeds alone"),
    page_faults: bool = typer.Option(False, help="CPU: also compare minor page faults per step by allocator setting"),
    note: str = typer.Option("", help="a line for the markdown, e.g. 'shared machine, 4 other jobs'"),
    out: str = typer.Option(default_factory=lambda: fresh_dir("bench") + "/step_speed.json", show_default="runs/bench-<time>/step_speed.json", help="JSON path, .md beside it (benchmarks/results/ holds the committed tables)"),
):
    """Time the market step against a per-vendor loop, backprop SGD and plain inference."""
    from ..errors import MarketplaceError
    from ..experiments.speed import Variant, run
    from ..machine import resolve_device

    variants = None
    if formulations:
        variants = [v for v in (FORMULATION_ROWS if formulations == "all" else formulations).split(",") if v]
        try:
            for v in variants:
                Variant.parse(v)
        except ValueError as e:
            raise MarketplaceError(f"--formulations: {e}") from e
    dev = resolve_device(device)
    result = run(dev, list(ints(vendors, "--vendors")) if vendors else None, depth, batch, repeats,
                 precision, compile, loop, out, variants=variants, philox=philox, note=note)
    if page_faults and dev.type == "cpu":
        import json
        from pathlib import Path

        from ..experiments import page_faults as pf
        from ..experiments.speed import write_text

        m = (result["config"]["vendors"] or [4])[-1]
        rows = pf.compare(m=m, batch=result["config"]["batch"], steps=3, rounds=2)
        text = pf.table(rows)
        print(text)
        path = Path(out or "benchmarks/results/step_speed_cpu.json")
        path = path.with_name(path.stem + "_page_faults.json")
        write_text(path, json.dumps({"config": result["config"], "rows": rows}, indent=2))
        write_text(path.with_suffix(".md"), f"# Minor page faults per CPU step: {result['config']['device']}\n\n"
                   f"{result['config']['note']}\n\n{text}\n")
