"""`marketplace train --model ... --data ...`: a user's model and data end to end, and the mistakes."""

from pathlib import Path

import numpy as np
import pytest

from helpers import assert_user_error, last_json, run_cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "custom_model.py"


@pytest.fixture
def npz(tmp_path):
    """A tiny image data set: 1x8x8, 3 classes, 64 training and 16 test examples."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 80)
    x = (rng.normal(size=(80, 1, 8, 8)) + y[:, None, None, None]).astype(np.float32)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    return path


def test_user_model_and_data_end_to_end(monkeypatch, capsys, npz, tmp_path):
    ckpt = tmp_path / "c.safetensors"
    code, out, err = run_cli(monkeypatch, capsys, "train", "--model", f"{EXAMPLE}:build", "--data", npz,
                             "--vendors", "4,4,4,4", "--steps", 4, "--batch", 8, "--eval-every", 2,
                             "--checkpoint", ckpt, "--quiet", "--json")
    assert code == 0, err
    summary = last_json(out)
    assert summary["steps"] == 4 and summary["vendors"] == [4, 4, 4, 4] and summary["dataset"] == str(npz)
    monkeypatch.chdir(tmp_path)  # the checkpoint names the factory by its absolute path
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", ckpt, "--json")
    assert code == 0, err
    assert last_json(out)["test_accuracy"] == pytest.approx(summary["test_accuracy"])


def test_module_factory_with_split_and_presets(monkeypatch, capsys, npz):
    monkeypatch.chdir(REPO)
    code, out, err = run_cli(monkeypatch, capsys, "train", "--model", "examples.custom_model:build_sequential",
                             "--split", "3,6,8", "--data", npz, "--vendors", "2,2,1,2", "--steps", 1,
                             "--batch", 4, "--quiet", "--json")
    assert code == 0, err
    for model, vendors in (("mlp", "2,2,2,2,2"), ("resnet", "2,2,2,2")):
        code, out, err = run_cli(monkeypatch, capsys, "train", "--model", model, "--data", npz, "--vendors", vendors,
                                 "--steps", 1, "--batch", 4, "--quiet", "--json")
        assert code == 0, err
        assert last_json(out)["model"] == model


@pytest.mark.parametrize("args,hint", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--steps", "-5"], "--steps must be >= 1"),
    (["--max-seconds", "-3"], "--max-seconds must be a finite number > 0"),
    (["--steps", "2", "--eval-every", "0"], "--eval-every must be >= 1"),
    (["--steps", "1", "--model", "no_such_pkg.models:build"], "cannot import no_such_pkg.models"),
    (["--steps", "1", "--model", "{example}:Residual"], "the factory raised TypeError"),
    (["--steps", "1", "--model", "{example}:nothing"], "has no 'nothing'"),
    (["--steps", "1", "--model", "{example}:build", "--vendors", "4,4"], "--vendors has 2 counts but --model"),
    (["--steps", "1", "--model", "{example}:build_sequential", "--vendors", "4,4"], "give --split with 1 layer"),
    (["--steps", "1", "--data", "{bad}"], "lacks y_test"),
    (["--steps", "1", "--model", "resnet", "--vendors", "4,4,4,4,4,4"], "split it into 1 to 5 specs, not 6"),
])
def test_bad_input_is_one_line(monkeypatch, capsys, npz, tmp_path, args, hint):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((4, 1, 8, 8)), y_train=np.zeros(4, np.int64), x_test=np.zeros((2, 1, 8, 8)))
    args = [a.format(example=EXAMPLE, bad=bad) for a in args]
    if "--data" not in args:
        args += ["--data", str(npz)]
    if "--vendors" not in args:
        args += ["--vendors", "2,2,2"]
    code, out, err = run_cli(monkeypatch, capsys, "train", "--quiet", *args)
    assert_user_error(code, out, err, hint)
