import json

import torch

from benchmarks.lib.speed import bench_market, looped_evaluate, run, table
from marketplace import Market, draw_vendors
from marketplace.models import beautiful_mnist


def test_looped_reference_equals_the_batched_market():
    torch.manual_seed(0)
    market = Market(beautiful_mnist(3), vendors=[3, 2, 2], precision="fp32")
    vendors = draw_vendors(0, 0, market.vendor_counts, [0.05] * 3)
    x = torch.randn(3, 1, 28, 28)
    fast, slow = market.evaluate(x, vendors), looped_evaluate(market, x, vendors)
    assert torch.equal(fast.paths, slow.paths)
    torch.testing.assert_close(fast.products, slow.products, rtol=1e-4, atol=1e-4)


def test_bench_rows_measure_work_and_time():
    rows = bench_market(2, depth=3, batch=4, device=torch.device("cpu"), warmup=0, repeats=1)
    names = [r.name for r in rows]
    assert names == ["market V2 step", "per-vendor loop step", "backprop SGD step", "plain inference"]
    market, looped, backprop, inference = rows
    assert market.flop == looped.flop > 0  # the same work, batched or not
    assert backprop.flop > 2 * inference.flop / 8  # forward + backward of 4 images vs forward of 8 x 4
    assert all(r.ms > 0 for r in rows)
    assert market.images == 8 * 4
    assert "| market V2 step | 2 |" in table(rows)


def test_run_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench.json"
    run(torch.device("cpu"), vendors=[2], batch=2, repeats=1, loop=False, out=str(out))
    data = json.loads(out.read_text())
    assert data["config"]["vendors"] == [2] and len(data["rows"]) == 3
    assert out.with_suffix(".md").read_text().startswith("# Step speed: CPU")
    assert "market V2 step" in capsys.readouterr().out
