"""Research commands write to a fresh place of their own by default, never over the repository's committed results."""

from __future__ import annotations

import click
import pytest
import typer

from experiments.lib.cli import experiment, main


def default_out() -> str:
    app = typer.Typer()
    app.command()(experiment)
    cmd = typer.main.get_command(app)
    param = next(p for p in cmd.params if p.name == "out")
    with click.Context(cmd) as ctx:
        return param.get_default(ctx, call=True)


def test_experiment_results_go_to_a_fresh_run_directory():
    out = default_out()
    assert out.startswith("runs/experiment-"), out
    assert default_out() != "results"


def test_an_experiment_reuses_logs_only_from_the_place_it_is_given(monkeypatch, capsys, tmp_path):
    """--plot-only redraws an earlier run: with the default --out there is none, and results/ is not read."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(experiment, ["depth", "--plot-only", "--no-mlflow"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error:") and "no logs" in err and "runs/experiment-" in err
    assert not (tmp_path / "results").exists()
