"""The runnable examples, in a short form."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mlp_two_specs_learns(data_dir):
    accuracy = load("mlp_two_specs").main(steps=40, target=40.0, data_dir=str(data_dir))
    assert 40.0 <= accuracy <= 100.0


def test_mlp_two_specs_fails_loudly_below_its_target(data_dir):
    with pytest.raises(SystemExit, match="missed the target"):
        load("mlp_two_specs").main(steps=1, target=99.0, data_dir=str(data_dir))
