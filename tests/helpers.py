"""Helpers shared by the test files (not tests themselves)."""

import sys

from marketplace.cli import main


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `marketplace ARGS` run in-process; a normal return is exit code 0."""
    monkeypatch.setattr(sys, "argv", ["marketplace", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
