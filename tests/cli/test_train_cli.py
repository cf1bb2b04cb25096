"""Tests of the `marketplace` command line, run in-process through `marketplace.cli.main()`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import marketplace.data as data_module
from helpers import assert_user_error, last_json, run_cli

TINY = ["--steps", "2", "--batch", "8", "--eval-samples", "100", "--device", "cpu", "--quiet"]


# -- training and evaluating --------------------------------------------------


def test_train_prints_a_final_json_line(monkeypatch, capsys, small_data):
    code, out, err = run_cli(monkeypatch, capsys, "train", "--vendors", "2,2,2", *TINY, "--json",
                             "--data-dir", small_data)
    assert code == 0, err
    assert "Traceback" not in err
    assert len(out.strip().splitlines()) == 1, out  # --json --quiet: only the result
    result = last_json(out)
    assert 0.0 <= result["test_accuracy"] <= 100.0
    assert result["steps"] == 2
    assert isinstance(result["seconds"], (int, float)) and result["seconds"] >= 0
    assert result["vendors"] == [2, 2, 128]  # --cheap-vendors 0.1 by default: the head's vendors are nearly free
    assert result["algorithm"] == "v2" and result["dataset"] == "mnist"


def test_train_with_a_single_spec_and_progress_bar(monkeypatch, capsys, small_data):
    args = ["train", "--vendors", "2", "--steps", "1", "--batch", "8", "--eval-samples", "100",
            "--device", "cpu", "--json", "--data-dir", small_data]  # no --quiet: the progress bar runs
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    result = last_json(out)
    assert result["vendors"] == [2]
    assert result["steps"] == 1
    assert "test accuracy" in err  # the bar's closing line goes to stderr, not into the JSON on stdout


@pytest.mark.parametrize("average", [[], ["--average", "2"]], ids=["weights", "averaged-weights"])
def test_checkpoint_then_evaluate_reports_the_same_accuracy(monkeypatch, capsys, small_data, tmp_path, average):
    ckpt = tmp_path / "run.safetensors"
    log = tmp_path / "run.jsonl"
    code, out, err = run_cli(monkeypatch, capsys, "train", "--vendors", "2,2", *TINY, "--json",
                             "--checkpoint", ckpt, "--log", log, "--data-dir", small_data, *average)
    assert code == 0, err
    trained = last_json(out)
    assert ("weights averaged over about 2 steps" in err) == bool(average)
    assert ckpt.is_file()
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "end"

    code, out, err = run_cli(monkeypatch, capsys, "evaluate", ckpt, "--json", "--device", "cpu",
                             "--data-dir", small_data)
    assert code == 0, err
    evaluated = last_json(out)
    assert evaluated["test_accuracy"] == trained["test_accuracy"]
    assert evaluated["steps"] == 2
    assert evaluated["dataset"] == "mnist"

    code, out, err = run_cli(monkeypatch, capsys, "evaluate", ckpt, "--device", "cpu", "--data-dir", small_data)
    assert code == 0, err
    assert f"{trained['test_accuracy']:.2f}%" in out
    assert ("weights averaged over about 2 steps" in out) == bool(average)


def test_resume_through_the_cli_continues_the_step_count(monkeypatch, capsys, small_data, tmp_path):
    ckpt = tmp_path / "r.safetensors"
    base = ["train", "--vendors", "2,2", "--batch", "8", "--eval-samples", "100", "--device", "cpu", "--quiet",
            "--json", "--checkpoint", ckpt, "--data-dir", small_data]
    code, out, err = run_cli(monkeypatch, capsys, *base, "--steps", "1")
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, *base, "--steps", "2", "--resume")
    assert code == 0, err
    assert last_json(out)["steps"] == 2
    code, out, err = run_cli(monkeypatch, capsys, *base, "--steps", "3", "--resume", "--probe-scale", "0.1")
    assert_user_error(code, out, err, "probe_scale=0.03, not 0.1", "resume with the same settings")


def test_the_stabilised_adaptive_rate_reaches_the_optimizer(monkeypatch, capsys, small_data, tmp_path):
    from marketplace.training import load_checkpoint

    ckpt = tmp_path / "a.safetensors"
    code, out, err = run_cli(monkeypatch, capsys, "train", "--algorithm", "adaptive", "--vendors", "2", *TINY,
                             "--json", "--rate-bounds", "0.5,2", "--rate-smoothing", "0.9", "--checkpoint", ckpt,
                             "--data-dir", small_data)
    assert code == 0, err
    assert last_json(out)["algorithm"] == "adaptive"
    state = load_checkpoint(ckpt).optimizer
    assert (state["rate_bounds"], state["rate_smoothing"], state["lr0"]) == ([0.5, 2.0], 0.9, [0.15])
    assert 0.5 * 0.15 <= state["lr"][0] <= 2 * 0.15


# -- user errors: one line, exit 2 ------------------------------------------


@pytest.mark.parametrize(
    "args, hints",
    [
        pytest.param(["train", "--dataset", "cifar10", "--steps", "1"], ["cifar10"], id="unknown-dataset"),
        pytest.param(["train", "--vendors", "0,4,4", "--steps", "1"], ["vendor"], id="zero-vendors"),
        pytest.param(["train", "--vendors", "2,2,2,2", "--steps", "1"], ["--vendors"], id="four-specs"),
        pytest.param(["train", "--vendors", "a,b", "--steps", "1"], ["--vendors"], id="vendors-not-ints"),
        pytest.param(["train", "--vendors", "2,2"], ["--steps"], id="no-stop"),
        pytest.param(["train", "--resume", "--steps", "1"], ["--checkpoint"], id="resume-no-checkpoint"),
        pytest.param(["train", "--algorithm", "v9", "--steps", "1"], ["v9"], id="unknown-algorithm"),
        pytest.param(["train", "--on-nonfinite", "maybe", "--steps", "1"], ["--on-nonfinite"], id="bad-nonfinite"),
        pytest.param(["train", "--unit", "layer", "--steps", "1"], ["--unit"], id="bad-unit"),
        pytest.param(["train", "--optimizer", "lion", "--steps", "1"], ["--optimizer"], id="bad-optimizer"),
        pytest.param(["train", "--schedule", "warmup-cosine", "--warmup", "5", "--max-seconds", "5"],
                     ["warmup in steps: give --steps or --schedule-steps"], id="warmup-without-steps"),
        pytest.param(["train", "--algorithm", "v1", "--optimizer", "adam", "--steps", "1"], ["v2 only"],
                     id="torch-options-on-v1"),
        pytest.param(["train", "--cheap-vendors", "-1", "--steps", "1"], ["--cheap-vendors"], id="bad-cheap-vendors"),
        pytest.param(["train", "--algorithm", "adaptive", "--rate-bounds", "a,b", "--steps", "1"], ["--rate-bounds"],
                     id="rate-bounds-not-numbers"),
        pytest.param(["train", "--algorithm", "adaptive", "--rate-bounds", "0.5", "--steps", "1"], ["LO,HI"],
                     id="rate-bounds-one-value"),
        pytest.param(["train", "--algorithm", "adaptive", "--rate-bounds", "1.5,2", "--steps", "1"], ["LO <= 1"],
                     id="rate-bounds-exclude-lr"),
        pytest.param(["train", "--algorithm", "adaptive", "--rate-smoothing", "1", "--steps", "1"],
                     ["--rate-smoothing"], id="rate-smoothing-one"),
        pytest.param(["train", "--rate-bounds", "0.5,2", "--steps", "1"], ["adaptive only"], id="rate-bounds-on-v2"),
        pytest.param(["train", "--average", "1", "--steps", "1"], ["--average", ">= 2"], id="average-one-step"),
        pytest.param(["train", "--lr", "0.1,0.1", "--steps", "1"], ["--lr", "2 rates for 3 specs"], id="lr-per-spec-count"),
        pytest.param(["train", "--lr", "0.1,x,0.1", "--steps", "1"], ["--lr"], id="lr-not-numbers"),
        pytest.param(["train", "--lr", "0.1,0,0.1", "--steps", "1"], ["--lr"], id="lr-per-spec-zero"),
    ],
)
def test_user_errors_print_one_line(monkeypatch, capsys, tmp_path, args, hints):
    # no data anywhere: were the mistake not caught, the run would stop on missing data, not train
    monkeypatch.setenv("MARKETPLACE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(data_module, "default_cache_dir", lambda: tmp_path / "cache")
    assert_user_error(*run_cli(monkeypatch, capsys, *args), *hints)


def test_negative_learning_rate(monkeypatch, capsys, small_data):
    code, out, err = run_cli(monkeypatch, capsys, "train", "--vendors", "2,2", "--lr", "-1", *TINY,
                             "--data-dir", small_data)
    assert_user_error(code, out, err, "-1")


def test_evaluate_missing_checkpoint(monkeypatch, capsys, tmp_path):
    path = tmp_path / "missing.safetensors"
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", path)
    assert_user_error(code, out, err, str(path))


def test_evaluate_corrupt_checkpoint(monkeypatch, capsys, tmp_path):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(os.urandom(2048))
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", path)
    assert_user_error(code, out, err, str(path))


def test_missing_data_offline(monkeypatch, capsys, tmp_path):
    empty_arg, empty_env, empty_cache = (tmp_path / d for d in ("arg", "env", "cache"))
    for d in (empty_arg, empty_env, empty_cache):
        d.mkdir()
    monkeypatch.setenv("MARKETPLACE_OFFLINE", "1")
    monkeypatch.setenv("MARKETPLACE_DATA_DIR", str(empty_env))
    monkeypatch.setattr(data_module, "default_cache_dir", lambda: empty_cache)
    code, out, err = run_cli(monkeypatch, capsys, "train", "--vendors", "2,2", *TINY, "--data-dir", empty_arg)
    assert_user_error(code, out, err, "not found", "--data-dir", str(empty_arg))
    assert os.listdir(empty_cache) == []  # nothing was downloaded


def test_unknown_option_is_a_usage_error_without_traceback(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "train", "--no-such-option")
    assert "Traceback" not in out + err
    assert code == 2
    assert "--no-such-option" in err


def test_no_arguments_shows_help_without_traceback(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys)
    assert "Traceback" not in out + err
    assert code in (0, 2)
    assert "train" in out + err and "evaluate" in out + err


# -- the module entry point -------------------------------------------------


def test_python_m_marketplace_help(tmp_path):
    env = {**os.environ, "MARKETPLACE_OFFLINE": "1", "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "marketplace", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "evaluate" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_version_matches_the_installed_distribution(monkeypatch, capsys):
    from importlib.metadata import version

    code, out, _ = run_cli(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"marketplace {version('marketplace-ml')}"
