"""Each command's option defaults are its config's: a default lives in one dataclass, never restated in the CLI."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import typer.main

from marketplace.cli import app
from marketplace.cli.continual import continual_config, pretrain_config
from marketplace.cli.serve import server_config
from marketplace.cli.train import DEFAULTS, train_config
from marketplace.continual.config import ContinualConfig
from marketplace.continual.pretrain import PRETRAIN
from marketplace.defaults import CLI_CHEAP_VENDORS
from marketplace.distributed import DistributedConfig
from marketplace.serving.config import ServerConfig
from marketplace.training import TrainConfig


def defaults(*names: str) -> dict:
    """{parameter: default} of the command `marketplace NAMES...`."""
    command = typer.main.get_command(app)
    for name in names:
        command = command.commands[name]
    return {p.name: p.default for p in command.params}


def differences(config, expected) -> dict:
    """{field: (ours, expected)} where two configs differ."""
    ours, theirs = dataclasses.asdict(config), dataclasses.asdict(expected)
    return {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}


def test_train_defaults_are_train_configs():
    assert differences(train_config(**defaults("train")), DEFAULTS) == {}
    # The command differs from the library in one place: it buys cheap specs more vendors.
    assert differences(DEFAULTS, TrainConfig()) == {"cheap_vendors": (CLI_CHEAP_VENDORS, 0.0)}


def test_train_distributed_defaults_are_train_and_distributed_configs():
    options = defaults("train-distributed")
    dist = DistributedConfig(**{f.name: options.pop(f.name) for f in dataclasses.fields(DistributedConfig)})
    assert differences(dist, DistributedConfig()) == {}
    assert differences(train_config(**options), DEFAULTS) == {}


def test_pretrain_defaults_are_pretrains():
    assert differences(pretrain_config(**defaults("continual", "pretrain")), PRETRAIN) == {}


@pytest.mark.parametrize("experiment, start", [
    ("dress", "runs/digits.safetensors"), ("dress-class10", "runs/digits.safetensors"), ("nine", PRETRAIN.checkpoint),
])
def test_continual_defaults_are_continual_configs(experiment, start):
    config = continual_config(experiment, **defaults("continual", experiment))
    assert differences(config, ContinualConfig(experiment=experiment)) == (
        {} if start == ContinualConfig.checkpoint else {"checkpoint": (start, ContinualConfig.checkpoint)})


def test_serve_defaults_are_server_configs():
    options = defaults("serve")
    # Worked out when the server starts: a store per checkpoint, a token from the environment or made up.
    assert options.pop("store") is None and options.pop("token") is None
    assert differences(server_config(**options), ServerConfig()) == {}


def test_the_command_line_imports_no_web_framework():
    """`marketplace train` starts without FastAPI and uvicorn; only `serve` needs them."""
    code = ("import sys, marketplace.cli\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
