"""The alignment grid: weights moved between depths, one measured cell, the table and the plot."""

import json

import torch

from marketplace.diagnostics.grid import Cell, build, format_table, load_weights, measure, plot
from marketplace.io import write_atomic
from marketplace.models import beautiful_mnist
from marketplace import Market


def test_weights_move_between_depths_unchanged():
    x = torch.randn(3, 1, 28, 28)
    torch.manual_seed(1)
    deep = Market(beautiful_mnist(depth=3), [2, 2, 2])
    for depth in (1, 2):
        shallow, _ = build(Cell("t", (2,) * depth), None, seed=7, device=torch.device("cpu"))
        assert not torch.allclose(shallow(x), deep(x))  # other seed, other weights
        load_weights(shallow, deep)
        torch.testing.assert_close(shallow(x), deep(x), rtol=1e-5, atol=1e-5)


def test_a_cell_measured_tabled_and_plotted(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 28, 28, generator=g), torch.randint(0, 10, (40,), generator=g)
    cell = Cell("vendors", (2, 3), batch=8)
    rows = [{"state": state, **measure(cell, weights, x, y, batches=2, seed=0)}
            for state, weights in (("init", None), ("trained", build(cell, None, 5, x.device)[0]))]
    z = rows[0]["estimators"]["zscore"]
    assert rows[0]["paths"] == 6 and z["batches"] == 2 and z["mean"]["directions"] == [1, 2]
    assert set(rows[0]["estimators"]) == {"zscore", "rank", "zscore-model", "best"}
    assert rows[0]["estimators"]["zscore"]["mean"] != rows[1]["estimators"]["zscore"]["mean"]
    table = format_table(rows)
    assert table.count("\n| init | 2x3 b8 p0.03 | 6 |") == 1 and "| trained |" in table
    plot(rows, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_atomic(tmp_path / "a.json", json.dumps(rows))
    assert json.loads((tmp_path / "a.json").read_text())[1]["state"] == "trained"
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*.tmp"))
