"""The protocol runner: resumable result files and the table of means and spreads."""

import json

from experiments.lib import protocol


def test_table_gives_mean_std_and_range():
    runs = {"v2": [{"test_accuracy": a, "seed": s} for s, a in enumerate([80.0, 82.0, 84.0])],
            "v2-4x4x32": []}
    text = protocol.table(runs, 1500)
    assert "| v2 | --cheap-vendors 0 | 0,1,2 | 82.00 ± 2.00 | 80.00 - 84.00 |" in text
    assert "| v2-4x4x32 | --vendors 4,4,32 --cheap-vendors 0 | none finished | | |" in text


def test_a_finished_run_is_read_back_not_run_again(tmp_path, monkeypatch):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "v2-s1.json").write_text(json.dumps({"test_accuracy": 81.5, "seed": 1}))
    monkeypatch.setattr(protocol.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    assert protocol.run_one("v2", 1, 1500, "cpu", tmp_path)["test_accuracy"] == 81.5
    protocol.main(["--variants", "v2", "--seeds", "1", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "protocol_cpu.json").read_text())
    assert record["variants"]["v2"]["runs"][0]["test_accuracy"] == 81.5 and record["machine"]


def test_report_only_tabulates_the_finished_runs_and_starts_none(tmp_path, monkeypatch):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "adaptive-s0.json").write_text(json.dumps({"test_accuracy": 84.0, "seed": 0}))
    monkeypatch.setattr(protocol.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    protocol.main(["--variants", "adaptive,adaptive-stable", "--seeds", "0,1", "--out", str(tmp_path),
                   "--report-only"])
    text = (tmp_path / "protocol_cpu.md").read_text()
    assert "| adaptive | --algorithm adaptive --cheap-vendors 0 | 0 | 84.00 (one seed) |" in text
    assert "| adaptive-stable |" in text and "none finished" in text
    assert not (tmp_path / "logs" / "adaptive-s1.json").exists()
