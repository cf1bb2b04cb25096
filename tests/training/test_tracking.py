"""Tests of marketplace.training.tracking: an MLflow run holds the whole config, per-step metrics and the commit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from marketplace.errors import MarketplaceError
from marketplace.training import JsonLog, TrainConfig, Trainer
from marketplace.training.tracking import MlflowLogger, default_tracking_uri, flat_params, git_commit

pytestmark = pytest.mark.usefixtures("small_data")


def tiny(data_dir, **overrides) -> TrainConfig:
    base = dict(vendors=(2,), batch=8, steps=3, log_every=1, eval_every=2, eval_samples=50, device="cpu",
                data_dir=str(data_dir))
    return TrainConfig(**{**base, **overrides})


def test_a_run_logs_config_metrics_per_step_and_commit(small_data, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    log = tmp_path / "run.jsonl"
    logger = MlflowLogger(mlflow_uri, experiment="unit", run_name="tiny", tags={"who": "test"}, artifacts=[log])
    summary = Trainer(tiny(small_data), [JsonLog(log), logger]).run()

    client = MlflowClient(mlflow_uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny"
    params = run.data.params
    for name in ("dataset", "algorithm", "vendors", "batch", "lr", "decay", "probe_scale", "seed", "norm"):
        assert name in params, f"config field {name} not logged"
    assert params["vendors"] == "2" and params["algorithm"] == "v2" and params["batch"] == "8"
    assert int(params["parameters"]) > 0
    losses = client.get_metric_history(logger.run_id, "loss")
    assert sorted(m.step for m in losses) == [1, 2, 3]  # log_every 1: every step
    for key in ("train_accuracy", "lr", "steps_per_second", "seconds"):
        assert len(client.get_metric_history(logger.run_id, key)) == 3, key
    assert [m.step for m in client.get_metric_history(logger.run_id, "test_accuracy")] == [2]
    assert run.data.metrics["final_test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert run.data.tags["who"] == "test"
    commit, dirty = git_commit()
    if commit:
        assert run.data.tags["mlflow.source.git.commit"] == commit
        assert run.data.tags["git_dirty"] == str(dirty).lower()
    artifacts = [a.path for a in client.list_artifacts(logger.run_id)]
    assert artifacts == ["run.jsonl"]
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "end" and events.count("step") == 3


def test_close_marks_a_broken_run_failed(small_data, mlflow_uri):
    from mlflow.tracking import MlflowClient

    logger = MlflowLogger(mlflow_uri, experiment="unit")
    trainer = Trainer(tiny(small_data))
    logger.on_start(trainer.config, trainer.market, 0)
    logger.close("FAILED")
    assert MlflowClient(mlflow_uri).get_run(logger.run_id).info.status == "FAILED"
    logger.close("FAILED")  # twice is harmless


def test_where_runs_go(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == (tmp_path / "mlruns").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:5000")
    assert default_tracking_uri() == "http://localhost:5000"
    assert MlflowLogger("sqlite:///x.db").tracking_uri == "sqlite:///x.db"


def test_params_are_flat_strings():
    params = flat_params({"vendors": (4, 4, 4), "sampling": None, "lr": 0.1, "nested": {"a": 1}, "empty": ()})
    assert params == {"vendors": "4,4,4", "sampling": "None", "lr": "0.1", "nested.a": "1", "empty": "-"}


def test_without_mlflow_the_error_says_how_to_get_it(small_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    trainer = Trainer(tiny(small_data))
    with pytest.raises(MarketplaceError, match="mlflow"):
        MlflowLogger("file:///nowhere").on_start(trainer.config, trainer.market, 0)


def test_mlflow_is_imported_only_when_a_run_starts():
    code = ("import sys, marketplace.training.tracking, marketplace.cli; "
            "print('mlflow' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
