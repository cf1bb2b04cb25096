"""Tests of experiments.lib.runs and `python experiments/run.py`: every experiment, tiny, end to end."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from marketplace.errors import MarketplaceError
from experiments.lib.baselines import BackpropConfig
from experiments.lib.plot import load_run
from experiments.lib.runs import EXPERIMENTS, RunSize, run_experiment
from marketplace.training import TrainConfig

pytestmark = pytest.mark.usefixtures("small_data")

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(steps=2, scale=0.004, eval_every=1, eval_samples=20, device="cpu")  # batch 8, 2 vendors per spec
# Per experiment: options that keep it tiny, and the runs it must make.
CASES = {
    "depth": ({}, ["v1-1x2", "v1-3x2"]),
    "backprop": ({}, ["v1-2x2x2", "v2-2x2x2", "sgd-0.001-batch", "sgd-0.003-batch", "sgd-0.007-batch",
                      "adam-1e-3-instance"]),
    "norm": ({}, ["v2-2x2x2-instance", "v2-2x2x2-product-batch", "v2-2x2x2-mixed-batch"]),
    "sweep": ({"lrs": (0.1,), "decays": (1e-4, 1e-5)}, ["v2-lr0.1-decay0.0001", "v2-lr0.1-decay1e-05"]),
    "target": ({}, ["v2-2x2x2"]),
}


def test_every_experiment_is_tested():
    assert set(CASES) == set(EXPERIMENTS)


@pytest.mark.parametrize("name", list(CASES))
def test_experiment_end_to_end(name, small_data, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    options, expected = CASES[name]
    size = RunSize(**TINY, data_dir=str(small_data))
    result = run_experiment(name, size, tmp_path / "out", tracking_uri=mlflow_uri, progress=False, **options)

    assert list(result.summaries) == expected
    out = tmp_path / "out" / name
    assert result.png == out / f"{name}.png" and result.png.read_bytes()[:8] == PNG_MAGIC
    table = result.table.read_text()
    assert f"![{name}]({name}.png)" in table and "- machine: " in table
    for run_name, summary in result.summaries.items():
        assert summary["steps"] == 2
        log = load_run(out / f"{run_name}.jsonl")  # the JSON log is always written
        assert log.end["steps"] == 2 and [r["step"] for r in log.records] == [1, 2]
        assert log.config["batch"] == 8
        assert f"| {run_name} | {summary['test_accuracy']:.2f} |" in table

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name(f"marketplace-{name}")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(expected)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["marketplace.experiment"] == name
        assert {"loss", "train_accuracy", "test_accuracy", "lr", "steps_per_second", "final_test_accuracy"} \
            <= set(run.data.metrics)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
        assert run.data.params["batch"] == "8"


def test_published_sizes_at_scale_one():
    size = RunSize(steps=3000)
    depth = EXPERIMENTS["depth"].runs(size)
    assert [r.name for r in depth] == ["v1-1x8", "v1-1x16", "v1-1x32", "v1-1x64", "v1-3x8", "v1-3x16"]
    assert depth[-1].config.vendors == (16, 16, 16) and depth[-1].config.batch == 512
    runs = {r.name: r.config for r in EXPERIMENTS["backprop"].runs(size)}
    v2 = runs["v2-16x16x16"]
    assert isinstance(v2, TrainConfig) and (v2.lr, v2.decay, v2.probe_scale, v2.per_spec) == (0.1, 1e-5, 0.1, True)
    v1 = runs["v1-16x16x16"]
    assert (v1.algorithm, v1.lr, v1.decay) == ("v1", 1e-3, 1e-4)  # article 1, pinned against library defaults
    sgd = runs["sgd-0.007-batch"]
    assert isinstance(sgd, BackpropConfig) and (sgd.lr, sgd.norm, sgd.momentum) == (7e-3, "batch", 0.0)
    assert runs["adam-1e-3-instance"].algorithm == "adam"
    assert all(c.batch == 512 and c.steps == 3000 and c.seed == 0 for c in runs.values())
    assert RunSize(steps=10, scale=0.25).batch == 128 and RunSize(steps=10, scale=0.25, batch_size=32).batch == 32
    assert RunSize(steps=10, scale=0.25).vendors(16) == 4 and RunSize(steps=10, scale=0.01).vendors(16) == 2


def test_options_an_experiment_does_not_take_are_refused(tmp_path, small_data):
    with pytest.raises(MarketplaceError, match="takes no option lrs"):
        run_experiment("depth", RunSize(**TINY, data_dir=str(small_data)), tmp_path, mlflow=False, lrs=(0.1,))
    with pytest.raises(MarketplaceError, match="unknown experiment"):
        run_experiment("nope", RunSize(**TINY), tmp_path, mlflow=False)


def test_only_and_plot_only(tmp_path, small_data):
    """--only trains some runs and draws them with the others' logs; --plot-only trains nothing."""
    size = RunSize(**TINY, data_dir=str(small_data))
    out = tmp_path / "norm"
    with pytest.raises(MarketplaceError, match="no logs for"):
        run_experiment("norm", size, tmp_path, mlflow=False, progress=False, plot_only=True)
    first = run_experiment("norm", size, tmp_path, mlflow=False, progress=False, command="first")
    before = {p.name: p.read_text() for p in out.glob("*.jsonl")}
    again = run_experiment("norm", size, tmp_path, mlflow=False, progress=False, command="second",
                           only=["v2-2x2x2-mixed-batch"])
    after = {p.name: p.read_text() for p in out.glob("*.jsonl")}
    assert list(again.summaries) == list(first.summaries)  # every run is in the table
    assert after["v2-2x2x2-instance.jsonl"] == before["v2-2x2x2-instance.jsonl"]  # not retrained
    assert "- command: `first`, then `second`" in again.table.read_text()
    redrawn = run_experiment("norm", size, tmp_path, mlflow=False, progress=False, command="third", plot_only=True)
    assert {p.name: p.read_text() for p in out.glob("*.jsonl")} == after
    assert "- command: `first`, then `second`" in redrawn.table.read_text()
    assert redrawn.summaries["v2-2x2x2-instance"]["steps"] == 2
    with pytest.raises(MarketplaceError, match="has no run nope"):
        run_experiment("norm", size, tmp_path, mlflow=False, progress=False, only=["nope"])



def tiny_args(small_data, tmp_path):
    return ["--steps", "2", "--scale", "0.004", "--eval-every", "1", "--eval-samples", "20", "--device", "cpu",
            "--data-dir", small_data, "--out", tmp_path, "--no-mlflow", "--quiet"]


def test_experiment_command(run_script, tmp_path, small_data):
    code, out, err = run_script("experiment", "target", *tiny_args(small_data, tmp_path), "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert list(result["runs"]) == ["v2-2x2x2"] and Path(result["png"]).is_file()
    assert "python experiments/target.py --steps 2" in Path(result["table"]).read_text()
    # --target: exit 1 when missed
    code, out, err = run_script("experiment", "target", *tiny_args(small_data, tmp_path),
                                "--target", "101")
    assert code == 1 and "missed the target" in err
    code, out, err = run_script("experiment", "list")
    assert code == 0 and all(name in out for name in EXPERIMENTS)


@pytest.mark.parametrize("args, hint", [
    (["experiment", "nope"], "unknown experiment"),
    (["experiment", "depth", "--target", "97"], "--target applies"),
    (["experiment", "depth", "--scale", "0"], "--scale"),
    (["experiment", "backprop", "--algorithm", "v2", "--steps", "1"], "takes no option algorithm"),
    (["experiment", "sweep", "--lrs", "a,b"], "comma-separated"),
])
def test_experiment_command_mistakes(run_script, tmp_path, args, hint):
    code, out, err = run_script(*args, "--out", tmp_path, "--no-mlflow")
    assert code == 2 and hint in err and "Traceback" not in err


def test_the_scripts_are_the_commands(monkeypatch, capsys, tmp_path, small_data):
    for name in EXPERIMENTS:  # experiments/ may hold other scripts too
        path = REPO / "experiments" / f"{name}.py"
        assert runpy.run_path(str(path), run_name="not_main")["EXPERIMENT"] == name
    monkeypatch.setattr(sys, "argv", ["norm.py", *map(str, tiny_args(small_data, tmp_path))])
    with pytest.raises(SystemExit) as exit_info:  # typer's standalone mode ends with exit 0
        runpy.run_path(str(REPO / "experiments" / "norm.py"), run_name="__main__")
        raise SystemExit(0)
    assert exit_info.value.code in (0, None)
    assert (tmp_path / "norm" / "norm.png").is_file()
    capsys.readouterr()
