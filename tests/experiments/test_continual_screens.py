"""The continual screens: one row per variant against the published settings; finished variants are not rerun."""

import importlib.util
from pathlib import Path

from helpers import no9_base

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "continual_screens.py"


def load_script():
    spec = importlib.util.spec_from_file_location("continual_screens", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_screens_write_an_ablation_table_and_skip_finished_variants(monkeypatch, capsys, small_data, tmp_path):
    base = tmp_path / "no9.safetensors"
    no9_base(monkeypatch, capsys, small_data, base)
    screens = load_script()
    args = ["nine", "--checkpoint", str(base), "--steps", "2", "--variants", "baseline", "--eval-every", "1",
            "--eval-samples", "40", "--data-dir", str(small_data), "--out", str(tmp_path / "screens")]
    rows = screens.main(args)
    assert [r["variant"] for r in rows] == ["published", "baseline"]  # the reference is always run first
    assert all(r["steps"] == 2 and r["learner_updates"] == 2 for r in rows)
    text = (tmp_path / "screens" / "screens.md").read_text()
    assert "| published |" in text and "| baseline |" in text
    from marketplace.training import load_checkpoint

    for name in ("published", "baseline"):  # the published rule, not ContinualConfig's default (rank)
        assert load_checkpoint(tmp_path / "screens" / f"{name}.safetensors").meta["config"]["attribution"] == "zscore"
    assert screens.settings("rank attribution", 2000)["attribution"] == "rank"
    assert screens.settings("baseline, lr 1e-1 to 1e-2 over the second half", 2000)["lr_hold"] == 1000
    summary = tmp_path / "screens" / "baseline.json"
    stamp = summary.stat().st_mtime_ns
    assert screens.main(args) == rows and summary.stat().st_mtime_ns == stamp



def test_a_variants_file_name_has_single_dashes():
    assert load_script().slug("baseline, lr 2.5e-2, balanced paths, K = 64") == "baseline-lr-2-5e-2-balanced-paths-K-64"
