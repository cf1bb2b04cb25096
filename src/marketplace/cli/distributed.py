"""`marketplace train-distributed`: the `train` command on a group of torchrun ranks.

    uv run torchrun --nproc-per-node 2 -m marketplace train-distributed --axis data --vendors 4,4,4 --steps 500

The command takes every option of `train` (read from its signature, so the
two never drift apart) and adds --axis, --backend, --timeout and
--check-every. Rank 0 alone shows the progress bar, writes the log, the
checkpoints and the --json line. Without torchrun it runs as a world of one.
"""

from __future__ import annotations

import inspect
import json
import sys
import typing
from typing import Any

import typer

from ..distributed.config import DistributedConfig
from . import app
from .options import option
from .train import train as train_command, train_config


def _distributed_options(
    axis: str = option(DistributedConfig, "axis", "data: ranks split each batch (same vendors); "
                       "replica: ranks probe different vendors on the same batch"),
    backend: str = option(DistributedConfig, "backend", "auto (nccl on CUDA, gloo on CPU), gloo or nccl"),
    timeout: float = option(DistributedConfig, "timeout", "seconds a collective waits for a peer before the run "
                            "fails"),
    check_every: int = option(DistributedConfig, "check_every", "steps between checks that every rank holds the "
                              "same weights"),
):
    """Only its signature is used: the options train-distributed adds to train's."""


def train_distributed(**options: Any) -> None:
    """Train a model as a market on every rank of a torchrun job, exchanging only seeds and losses."""
    from ..distributed import init_from_env, shutdown
    from ..training import JsonLog, ProgressBar, Trainer
    from ..training.hooks import RunLines

    dist_config = DistributedConfig(**{name: options.pop(name)
                                       for name in inspect.signature(_distributed_options).parameters})
    dist_config.validate()
    log, json_out, quiet = options["log"], options["json_out"], options["quiet"]
    config = train_config(**options)
    comm = init_from_env(dist_config.backend, config.device, dist_config.timeout)
    try:
        hooks = []
        if comm.rank == 0:  # as `train` reports: the market trained first, stdout kept for the JSON line
            hooks = [RunLines(sys.stderr if json_out else None, last=quiet and not json_out)]
            hooks += [] if quiet else [ProgressBar()]
            if log:
                hooks.append(JsonLog(log))
        trainer = Trainer(config, hooks, axis=dist_config.axis_for(comm), check_every=dist_config.check_every)
        summary = trainer.run()
    finally:
        shutdown()
    summary["vendors_asked"] = list(config.vendors)  # summary["vendors"]: the market trained
    if json_out and comm.rank == 0:
        print(json.dumps(summary), flush=True)


# torchrun reads every argument that abbreviates one of its own options, even
# after the module name: `--log` is ambiguous there (--log-dir, ...), so
# this command also takes it as --log-file.
_LOG = typer.Option(None, "--log-file", "--log", help="append a JSON line per logged step to this file "
                    "(under torchrun write --log-file)")


def _register() -> None:
    """Add `train-distributed` to the command line, with train's options and the distributed ones."""
    params, hints = [], {}
    for fn in (train_command, _distributed_options):
        resolved = typing.get_type_hints(fn)  # the annotations are strings (postponed evaluation)
        for p in inspect.signature(fn).parameters.values():
            hints[p.name] = resolved[p.name]
            params.append(p.replace(annotation=resolved[p.name], default=_LOG if p.name == "log" else p.default))
    train_distributed.__signature__ = inspect.Signature(params)
    train_distributed.__annotations__ = {**hints, "return": None}
    app.command("train-distributed")(train_distributed)


_register()
