"""Commands write to a fresh place of their own by default, never over the repository's committed results."""

from __future__ import annotations

import click
import pytest
import typer

from helpers import assert_user_error, run_cli
from marketplace.cli import app


def default_of(command: str, option: str):
    cmd = typer.main.get_command(app).commands[command]
    param = next(p for p in cmd.params if p.name == option)
    with click.Context(cmd) as ctx:
        return param.get_default(ctx, call=True)


@pytest.mark.parametrize("command, prefix", [("bench", "runs/bench-"), ("experiment", "runs/experiment-")])
def test_results_go_to_a_fresh_run_directory(command, prefix):
    out = default_of(command, "out")
    assert out.startswith(prefix), out
    assert "results" not in out.split("/")[0]


def test_an_experiment_reuses_logs_only_from_the_place_it_is_given(monkeypatch, capsys, tmp_path):
    """--plot-only redraws an earlier run: with the default --out there is none, and results/ is not read."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "experiment", "depth", "--plot-only", "--no-mlflow")
    assert_user_error(code, out, err, "no logs", "runs/experiment-")
    assert not (tmp_path / "results").exists()
