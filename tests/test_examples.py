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


def test_custom_model_factory_builds_markets_for_two_data_sets():
    import torch

    from marketplace import Market
    from marketplace.models import split_sequential

    module = load("custom_model")
    for shape in ((1, 28, 28), (3, 32, 32)):
        market = Market(module.build(shape, 10), vendors=2)
        assert market.depth == 4 and market(torch.randn(2, *shape)).shape == (2, 10)
    market = Market(split_sequential(module.build_sequential(), (3, 6, 8)), vendors=2)
    assert market.vendor_counts == (2, 2, 1, 2)  # the pooling spec has no parameters: one vendor
    assert market(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_mlp_two_specs_says_how_far_it_is(data_dir, capsys):
    load("mlp_two_specs").main(steps=20, target=0.0, data_dir=str(data_dir))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "market 8x8: 64 paths, 20 steps"
    assert [line.split()[1] for line in lines if line.startswith("step ")] == [f"{2 * i}/20" for i in range(1, 11)]


def docstring_commands(name):
    """The `marketplace train` commands a module's docstring gives, as argument lists."""
    import shlex

    prefix = "uv run marketplace "
    return [shlex.split(line.strip()[len(prefix):]) for line in load(name).__doc__.splitlines()
            if line.strip().startswith(prefix)]


@pytest.mark.parametrize("args", docstring_commands("custom_model"), ids=lambda a: a[2])
def test_custom_model_docstring_commands_run(args, monkeypatch, capsys, small_data):
    """Each command of the docstring, cut to two small steps."""
    from helpers import run_cli

    monkeypatch.chdir(EXAMPLES.parent)
    monkeypatch.syspath_prepend(str(EXAMPLES.parent))  # `examples.custom_model:build` imports from here
    args = [a if prev != "--steps" else "2" for prev, a in zip([None, *args], args)]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--batch", "8", "--eval-samples", "100", "--device", "cpu",
                             "--quiet", "--data-dir", small_data)
    assert code == 0, err
    assert out.splitlines()[0].startswith("market ") and "after 2 steps" in out.splitlines()[-1]


def test_finetune_moves_a_backprop_model_to_all_ten_digits(data_dir, capsys):
    before, after = load("finetune").main(pretrain=100, steps=150, data_dir=str(data_dir))
    assert after > before
    assert "before (trained on 0-4)" in capsys.readouterr().out
    before, after = load("finetune").main(pretrain=100, steps=150, data_dir=str(data_dir), freeze=True)
    assert after > before and "kernels frozen" in capsys.readouterr().out
