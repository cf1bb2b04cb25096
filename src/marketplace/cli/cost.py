"""`marketplace cost`: products, FLOPs and unit cost per product of a market, from `marketplace.cost`.

The articles' experiments, their plots and the benchmarks are scripts in the
repository's experiments/ and benchmarks/ folders, not commands of the package.
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from ..errors import MarketplaceError
from . import app
from .parse import ints


@app.command()
def cost(
    vendors: List[str] = typer.Option(["4,4,4"], help="vendors per spec; repeat for several markets: --vendors 64 --vendors 16,16,16"),
    sampling: Optional[str] = typer.Option(None, help="upstream sampling per spec (0 = all), for every market given"),
    batch: int = typer.Option(1, help="examples per step (FLOPs scale with it; unit cost per example when 1)"),
    json_out: bool = typer.Option(False, "--json", help="one JSON line per market"),
):
    """Products, FLOPs and unit cost per product of beautiful-MNIST markets (the cost model)."""
    from ..cost import beautiful_mnist_cost, format_table
    from ..market import Market
    from ..models import beautiful_mnist

    if batch < 1:
        raise MarketplaceError(f"--batch must be >= 1, got {batch}")
    costs = []
    for text in vendors:
        counts = ints(text, "--vendors")
        if not 1 <= len(counts) <= 3:
            raise MarketplaceError(f"--vendors needs 1 to 3 counts (one per spec), got {list(counts)}")
        samp = ints(sampling, "--sampling") if sampling else 0
        Market(beautiful_mnist(len(counts)), list(counts), samp)  # the market's own checks and messages
        costs.append(beautiful_mnist_cost(counts, samp, batch))
    if json_out:
        for c in costs:
            print(json.dumps(c.as_dict()))
    else:
        print(format_table(costs))

