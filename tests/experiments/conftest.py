"""The experiments' shared code (`experiments.lib`) is not installed with the package: import it from the checkout."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import pytest  # noqa: E402


@pytest.fixture
def run_script(monkeypatch, capsys):
    """(exit code, stdout, stderr) of `python experiments/run.py ARGS` ("experiment") or `plot.py ARGS` ("plot")."""
    from experiments.lib import cli

    def run(command: str, *args) -> tuple[int, str, str]:
        script = "experiments/run.py" if command == "experiment" else f"experiments/{command}.py"
        monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
        try:
            cli.main(getattr(cli, command))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run
