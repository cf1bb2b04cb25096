import json
import runpy
from pathlib import Path

import pytest
import torch

from benchmarks.lib import page_faults
from benchmarks.lib.speed import Variant, bench_market, run, table

ROOT = Path(__file__).resolve().parents[2]


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


def step_speed_script():
    """benchmarks/step_speed.py as a module (a script, not an installed one)."""
    return runpy.run_path(str(ROOT / "benchmarks" / "step_speed.py"), run_name="step_speed")


def test_step_speed_script_times_formulations_and_refuses_bad_ones(capsys, tmp_path):
    out = tmp_path / "f.json"
    main = step_speed_script()["main"]
    main(["--device", "cpu", "--vendors", "2", "--batch", "2", "--repeats", "1", "--no-loop",
          "--formulations", "all", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows[:3]] == ["vmap", "grouped", "wide"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cpu", "--formulations", "wide/fp8"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--formulations" in err and "Traceback" not in err


def test_step_speed_writes_outside_the_committed_results(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = run(torch.device("cpu"), [2], depth=3, batch=2, repeats=1, loop=False)
    assert (tmp_path / "runs" / "bench" / "step_speed_cpu.json").is_file() and result["rows"]


def test_page_fault_table_names_each_setting():
    rows = [{"setting": s, "vendors": 2, "batch": 8, "steps": 1, "minor_faults_per_step": f, "ms": 2.0,
             "sys_ms": 1.0, "user_ms": 1.0} for s, f in (("default", 5000), ("reuse", 0))]
    text = page_faults.table(rows)
    assert "| reuse | 2 | 8 | 0 |" in text and "1.00x" in text
