import json
import subprocess
import sys

import pytest
import torch

from helpers import assert_user_error, run_cli
from marketplace.experiments import page_faults
from marketplace.experiments.speed import Variant, bench_market, table


def test_variants_parse_every_part_and_refuse_unknown_ones():
    v = Variant.parse("wide/fp16/nocl/compile=max-autotune/regen")
    assert (v.formulation, v.precision, v.channels_last, v.compile, v.cache_deltas) == \
        ("wide", "fp16", False, "max-autotune", False)
    assert Variant.parse("grouped/compile").compile is True
    assert Variant.parse("vmap") == Variant(formulation="vmap")
    for bad in ("fast", "wide/fp8", "wide/bogus"):
        with pytest.raises(ValueError):
            Variant.parse(bad)


def test_formulation_rows_do_the_same_work_side_by_side():
    rows = bench_market(2, depth=3, batch=2, device=torch.device("cpu"), warmup=0, repeats=1, loop=False,
                        variants=["vmap", "grouped", "wide/fp32/nocl"], philox=True, baselines=False)
    assert [r.variant for r in rows] == ["vmap", "grouped", "wide/fp32/nocl", ""]
    steps, philox = rows[:3], rows[3]
    assert len({r.flop for r in steps}) == 1 and steps[0].flop > 0  # one function, three layouts
    assert philox.name == "philox deltas" and philox.ms > 0
    text = table(rows)
    assert "| market V2 step [grouped] | 2 |" in text and "ms vs original 88 ms" in text


def test_bench_cli_times_formulations_and_refuses_bad_ones(monkeypatch, capsys, tmp_path):
    out = tmp_path / "f.json"
    code, stdout, err = run_cli(monkeypatch, capsys, "bench", "--device", "cpu", "--vendors", "2", "--batch", "2",
                                "--repeats", "1", "--no-loop", "--formulations", "all", "--out", out)
    assert code == 0, err
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows[:3]] == ["vmap", "grouped", "wide"]
    assert_user_error(*run_cli(monkeypatch, capsys, "bench", "--device", "cpu", "--formulations", "wide/fp8"),
                      "--formulations")


_CHILD = """
import resource, sys, torch
from marketplace.experiments.page_faults import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
torch.ones(32 * 2**20).sum()  # 128 MB once: room for what follows
faults = []
for i in range(6):  # 64 MB blocks, freed at once: glibc maps fresh pages each time unless told to keep them
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reusing_freed_memory_stops_fresh_page_faults():
    def faults(setting):
        out = subprocess.run([sys.executable, "-c", _CHILD, setting], capture_output=True, text=True, check=True)
        return [int(f) for f in out.stdout.split()]

    default, reuse = faults("default"), faults("reuse")
    assert min(default) > 10_000  # 64 MB of 4 KB pages, faulted in afresh every time
    # kept memory is reused; now and then small blocks in between fragment the heap and one block is new
    assert sum(f < 1_000 for f in reuse) >= len(reuse) // 2, reuse


def test_page_fault_table_names_each_setting():
    rows = [{"setting": s, "vendors": 2, "batch": 8, "steps": 1, "minor_faults_per_step": f, "ms": 2.0,
             "sys_ms": 1.0, "user_ms": 1.0} for s, f in (("default", 5000), ("reuse", 0))]
    text = page_faults.table(rows)
    assert "| reuse | 2 | 8 | 0 |" in text and "1.00x" in text
