"""Tests of experiments.lib.plot: reading run logs, milestones, the markdown table, the PNG and experiments/plot.py."""

from __future__ import annotations

import json
import statistics

import pytest

from marketplace.errors import MarketplaceError
from experiments.lib.plot import find_runs, load_run, markdown_table, plot_runs, smooth

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_log(path, accuracies, every=10, seconds_per_step=0.5, finished=True, final=None):
    """A JSON-lines log as `JsonLog` writes it: start, a step record every `every` steps, end."""
    lines = [{"event": "start", "step": 0, "config": {"algorithm": "v2", "vendors": [2, 2, 2]}}]
    for i, acc in enumerate(accuracies, 1):
        step = i * every
        lines.append({"event": "step", "step": step, "seconds": step * seconds_per_step, "loss": 2.0 / i,
                      "train_accuracy": acc, "test_accuracy": acc, "lr": 0.1, "steps_per_second": 2.0})
    steps = len(accuracies) * every
    if finished:
        lines.append({"event": "end", "steps": steps, "seconds": steps * seconds_per_step,
                      "test_accuracy": final if final is not None else accuracies[-1], "test_loss": 0.1})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_milestones_final_best_and_jitter(tmp_path):
    run = load_run(write_log(tmp_path / "a.jsonl", [50, 91, 96, 95, 97.5, 97.0], final=97.2))
    assert run.name == "a" and run.config["algorithm"] == "v2"
    assert run.final_accuracy == 97.2 and run.best_accuracy == 97.5
    assert run.first_reaching(90) == (20, 10.0)
    assert run.first_reaching(97) == (50, 25.0)
    assert run.first_reaching(98) is None
    steps, seconds, values = run.series("test_accuracy")
    assert steps[-1] == 60 and values[-1] == 97.2  # the final figure closes the curve
    assert run.jitter() == pytest.approx(statistics.stdev([2.5, -0.5, 0.2]))  # 95, 97.5, 97, 97.2
    table = markdown_table([run])
    header, rule, row = table.splitlines()
    assert header.count("|") == rule.count("|") == row.count("|")
    assert row.startswith("| a | 97.20 | 97.50 | 20 | 30 | 50 | — | 10 | 15 | 25 | — | 60 | 30 | 2.00 |")


def test_a_fresh_start_replaces_a_resume_continues(tmp_path):
    path = write_log(tmp_path / "r.jsonl", [10, 20], finished=False)
    with open(path, "a") as f:  # resumed from step 20
        f.write(json.dumps({"event": "start", "step": 20, "config": {}}) + "\n")
        f.write(json.dumps({"event": "step", "step": 30, "seconds": 15, "test_accuracy": 30.0}) + "\n")
    assert [r["step"] for r in load_run(path).records] == [10, 20, 30]
    with open(path, "a") as f:  # started again from scratch
        f.write(json.dumps({"event": "start", "step": 0, "config": {}}) + "\n")
        f.write(json.dumps({"event": "step", "step": 10, "seconds": 5, "test_accuracy": 11.0}) + "\n")
    assert [r["step"] for r in load_run(path).records] == [10]


def test_smoothing_is_a_debiased_moving_average():
    assert smooth([1.0, 1.0, 1.0], 0.5) == pytest.approx([1.0, 1.0, 1.0])
    assert smooth([0.0, 2.0], 0.5) == pytest.approx([0.0, 2.0 * 0.5 / 0.75])
    assert smooth([3.0, 1.0], 0.0) == [3.0, 1.0]
    with pytest.raises(ValueError):
        smooth([1.0], 1.0)


def test_plot_writes_a_png(tmp_path):
    runs = [load_run(write_log(tmp_path / f"{n}.jsonl", accs)) for n, accs in
            [("v2", [60, 80, 90, 94]), ("sgd", [85, 95, 97, 98.5])]]
    out = plot_runs(runs, tmp_path / "sub" / "p.png", title="t", smoothing=0.5, note="machine")
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 20_000


def test_bad_logs_are_reported(tmp_path):
    with pytest.raises(MarketplaceError, match="no run log"):
        load_run(tmp_path / "missing.jsonl")
    (tmp_path / "junk.jsonl").write_text("{not json\n")
    with pytest.raises(MarketplaceError, match="not JSON"):
        load_run(tmp_path / "junk.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MarketplaceError, match="no .jsonl"):
        find_runs([tmp_path / "empty"])



def test_plot_command(tmp_path, run_script):
    logs = tmp_path / "runs"
    logs.mkdir()
    write_log(logs / "a.jsonl", [50, 91, 96])
    write_log(logs / "b.jsonl", [40, 60, 70])
    code, out, err = run_script("plot", logs, "--out", tmp_path / "p.png",
                                "--table", tmp_path / "t.md", "--smoothing", "0")
    assert code == 0, err
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC
    assert "| a | 96.00 |" in out and "| b | 70.00 |" in out
    assert (tmp_path / "t.md").read_text().strip() == out.strip()
    code, out, err = run_script("plot", tmp_path / "nope.jsonl")
    assert code == 2 and err.startswith("error:") and "no run log" in err
