"""The `marketplace` command line: one module per command group, each adding its commands to `app`.

`train` (train, evaluate), `cost`, `continual` (the `continual` group),
`distributed` (train-distributed), `serve` and `align`.
"""

from __future__ import annotations

import sys

import typer

from ..errors import MarketplaceError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train neural networks with forward passes only (the Marketplace algorithm).")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"marketplace {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    """Train neural networks with forward passes only (the Marketplace algorithm)."""

# Each module adds its commands to `app` when imported; the order is the order of `--help`.
from . import train, cost, continual, distributed, serve, align  # noqa: E402,F401  isort: skip


def run(typer_app: typer.Typer, **kwargs) -> None:
    """Run a Typer app so that a user's mistake prints one line, not a traceback.

    click reports its own usage errors (exit 2); the library's errors on bad
    input (MarketplaceError, and ValueError from argument checks) surface here,
    each field they name shown as its flag (`probe_scale` -> `--probe-scale`).
    kwargs go to the app (e.g. args=, prog_name=).
    """
    try:
        typer_app(**kwargs)
    except (MarketplaceError, ValueError) as e:
        from .options import for_cli

        print(f"error: {for_cli(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    """Entry point of the `marketplace` command."""
    run(app)
