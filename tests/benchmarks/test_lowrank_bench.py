import json
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lowrank_script():
    """benchmarks/lowrank.py as a module (a script, not an installed one)."""
    return runpy.run_path(str(ROOT / "benchmarks" / "lowrank.py"), run_name="lowrank_bench")


def test_tiny_run_writes_one_row_per_model_layout_and_rank(tmp_path):
    out = tmp_path / "lowrank"
    lowrank_script()["main"](["--configs", "mnist-cnn:2x2x2", "--rounds", "1", "--batch", "2", "--device", "cpu",
                              "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())
    text = out.with_suffix(".md").read_text()
    assert result["machine"] and result["machine"] in text
    assert [(r["model"], r["layout"], r["rank"]) for r in result["rows"]] == \
        [("mnist-cnn", "2x2x2", r) for r in (0, 1, 4)]
    assert text.count("| mnist-cnn | 2x2x2 |") == 3
    dense = result["rows"][0]
    for row in result["rows"][1:]:
        r = row["rank"]
        assert row["per_vendor_bytes"] < dense["per_vendor_bytes"]
        assert all(s["numbers"] < d["numbers"] for s, d in zip(row["per_vendor"], dense["per_vendor"]))
        head = row["per_vendor"][2]["weights"]["0.weight"]  # the Linear [10, 576]
        out_features, in_features = head["shape"]
        assert head["numbers"] == r * (out_features + in_features)
        assert row["per_vendor"][2]["numbers"] == r * (out_features + in_features) + out_features  # + the bias
        assert row["peak_step_bytes"] > 0 and row["step_ms"] > 0 and 0 < row["vendor_share"] < 1


def test_default_output_is_outside_the_committed_results(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    lowrank_script()["main"](["--configs", "mnist-cnn:1x1x1", "--ranks", "1", "--rounds", "1", "--batch", "1",
                              "--warmup", "0", "--device", "cpu"])
    assert (tmp_path / "runs" / "bench" / "lowrank_cpu.json").is_file()


def test_quality_mode_trains_each_rank_at_equal_steps(tmp_path, small_data):
    out = tmp_path / "quality"
    result = lowrank_script()["main"](["--configs", "", "--quality", "--ranks", "1", "--steps", "2", "--seeds", "0",
                                       "--device", "cpu", "--data-dir", str(small_data), "--out", str(out)])
    assert [(q["rank"], q["steps"], len(q["test_accuracy"])) for q in result["quality"]] == [(0, 2, 1), (1, 2, 1)]
    assert "| rank | accuracy per seed (%) | mean ± std |" in out.with_suffix(".md").read_text()
