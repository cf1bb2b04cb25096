"""Tests of the one `Trainer` on a group: a user's model and `.npz` file on 2 gloo ranks, as on one process.

`marketplace train-distributed` runs on forked ranks (`run_local`, no second
`import torch`); `marketplace train` in this process is the reference. The
data are 3x8x8 images of 3 classes, so a market built for MNIST's 1x28x28
input (or with MNIST's 10 classes) would fail or differ.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch

import marketplace.cli  # noqa: F401  imported here, so the forked ranks inherit the command modules
from marketplace.distributed import Collectives, DataAxis, ReplicaAxis, run_local
from marketplace.training import (CheckpointError, Trainer, TrainConfig, load_checkpoint, market_from_checkpoint,
                                  save_checkpoint)

from helpers import assert_close, assert_user_error, last_json, run_cli, succeeded

FACTORY = """
from torch import nn


def build(input_shape, classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(8 * h * w, classes))
"""


@pytest.fixture
def user_files(tmp_path):
    """(npz, factory): 56 training and 16 test images of shape 3x8x8 in 3 classes; a factory that reads them."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 72)
    x = (rng.normal(size=(72, 3, 8, 8)) + y[:, None, None, None]).astype(np.float32)
    npz = tmp_path / "x.npz"
    np.savez(npz, x_train=x[:56], y_train=y[:56], x_test=x[56:], y_test=y[56:])
    factory = tmp_path / "net.py"
    factory.write_text(FACTORY)
    return npz, factory


def user_flags(npz, factory, *more) -> list[str]:
    """A user's run: their file, their factory cut in two, and a FLOP slack that raises the head's vendors."""
    return ["--data", str(npz), "--model", f"{factory}:build", "--split", "2", "--vendors", "2,3",
            "--cheap-vendors", "1", "--batch", "8", "--eval-every", "2", "--device", "cpu", "--quiet", "--json",
            *map(str, more)]


def cli_rank(rank, world, argv, out_dir):
    """`marketplace ARGV` on one rank, stdout to a file; returns (exit code, stdout)."""
    from marketplace.cli import main

    out, saved = out_dir / f"stdout{rank}", (sys.argv, sys.stdout)
    sys.argv, sys.stdout = ["marketplace", *argv], open(out, "w")
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.stdout.close()
        sys.argv, sys.stdout = saved
    return code, out.read_text()


def two_ranks(argv, tmp_path) -> dict:
    """The --json summary of `marketplace ARGV` on 2 gloo ranks; only rank 0 prints."""
    results = succeeded(run_local(cli_rank, 2, [str(a) for a in argv], tmp_path, timeout=90))
    for code, out in results:
        assert code == 0, out
    assert results[1][1] == "", "only rank 0 prints"
    return json.loads(results[0][1].strip().splitlines()[-1])


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the data axis is the single-process run ----------------------------------------


def test_a_user_model_on_a_user_file_trains_on_two_ranks_as_on_one(monkeypatch, capsys, user_files, tmp_path):
    npz, factory = user_files
    single_ckpt, dist_ckpt = tmp_path / "single.safetensors", tmp_path / "dist.safetensors"
    code, out, err = run_cli(monkeypatch, capsys, "train", *user_flags(npz, factory, "--steps", 3),
                             "--checkpoint", single_ckpt, "--log", tmp_path / "single.jsonl")
    assert code == 0, err
    single = last_json(out)
    summary = two_ranks(["train-distributed", "--axis", "data", *user_flags(npz, factory, "--steps", 3),
                         "--checkpoint", dist_ckpt, "--log-file", tmp_path / "dist.jsonl"], tmp_path)

    assert summary["world_size"] == 2 and summary["steps"] == 3 and summary["dataset"] == str(npz)
    assert summary["bytes_per_step"] == 4 * np.prod(single["vendors"])  # P float32 path losses a step
    # The same run: weights up to the order of the loss sums, the same losses and test results.
    dist, ref = load_checkpoint(dist_ckpt), load_checkpoint(single_ckpt)
    assert_close(dist.model, ref.model)
    assert summary["test_accuracy"] == pytest.approx(single["test_accuracy"])
    assert summary["test_loss"] == pytest.approx(single["test_loss"], rel=1e-5)
    ours, theirs = log_lines(tmp_path / "dist.jsonl")[1], log_lines(tmp_path / "single.jsonl")[1]
    assert ours["step"] == theirs["step"] == 1
    for name in ("loss", "best_loss", "mean_loss"):  # the full batch's losses, summed over the ranks
        assert ours[name] == pytest.approx(theirs[name], rel=1e-5), name

    # The checkpoint records the model it holds, so it is rebuilt without the command's flags.
    assert dist.meta["model"] == ref.meta["model"] == {
        "source": f"{factory.resolve()}:build", "split": [2], "input_shape": [3, 8, 8], "classes": 3}
    assert dist.meta["distributed"]["world_size"] == 2 and dist.meta["distributed"]["axis"] == "data"
    # The counts reported are the market trained (--cheap-vendors raised the head's), on both.
    rebuilt = market_from_checkpoint(dist, str(dist_ckpt), torch.device("cpu"))
    assert summary["vendors"] == single["vendors"] == list(rebuilt.vendor_counts)
    assert summary["vendors"] != [2, 3] and summary["vendors_asked"] == single["vendors_asked"] == [2, 3]


def test_two_ranks_resume_a_user_run_exactly(user_files, tmp_path):
    npz, factory = user_files
    straight, parts = tmp_path / "straight.safetensors", tmp_path / "parts.safetensors"
    command = ["train-distributed", "--axis", "data"]
    two_ranks([*command, *user_flags(npz, factory, "--steps", 3), "--checkpoint", straight], tmp_path)
    two_ranks([*command, *user_flags(npz, factory, "--steps", 2), "--checkpoint", parts], tmp_path)
    summary = two_ranks([*command, *user_flags(npz, factory, "--steps", 3), "--checkpoint", parts, "--resume"],
                        tmp_path)
    assert summary["steps"] == 3
    a, b = load_checkpoint(straight), load_checkpoint(parts)
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    assert a.optimizer["lr"] == b.optimizer["lr"] and a.optimizer["steps"] == b.optimizer["steps"] == 3
    assert b.meta["model"] == a.meta["model"]
    assert summary["vendors"] == list(market_from_checkpoint(b, str(parts), torch.device("cpu")).vendor_counts)


def test_the_replica_axis_trains_a_user_model_on_a_user_file(user_files, tmp_path):
    npz, factory = user_files
    ckpt = tmp_path / "r.safetensors"
    summary = two_ranks(["train-distributed", "--axis", "replica", *user_flags(npz, factory, "--steps", 2),
                         "--checkpoint", ckpt], tmp_path)  # the ranks' weights are compared at the end
    saved = load_checkpoint(ckpt)
    rebuilt = market_from_checkpoint(saved, str(ckpt), torch.device("cpu"))
    assert summary["axis"] == "replica" and summary["vendors"] == list(rebuilt.vendor_counts)
    assert saved.meta["model"]["input_shape"] == [3, 8, 8] and saved.meta["model"]["classes"] == 3
    assert summary["bytes_per_step"] == (1 + 2 * sum(summary["vendors"])) * 8  # flag, seeds, attributions
    # Each rank drew its own vendors: the run continues only on the replica axis over 2 ranks.
    more = [*user_flags(npz, factory, "--steps", 3), "--checkpoint", ckpt, "--resume"]
    refused = succeeded(run_local(cli_rank, 2, [str(a) for a in ["train-distributed", "--axis", "data", *more]],
                                  tmp_path, timeout=90))
    assert [code for code, _ in refused] == [2, 2]
    assert two_ranks(["train-distributed", "--axis", "replica", *more], tmp_path)["steps"] == 3


def test_a_replica_checkpoint_is_not_resumed_as_another_run(user_files, tmp_path):
    npz, factory = user_files
    ckpt = tmp_path / "r.safetensors"
    config = lambda steps: TrainConfig(data=str(npz), model=f"{factory}:build", split=(2,), vendors=(2, 3),
                                       batch=8, steps=steps, device="cpu", checkpoint=str(ckpt), resume=True)
    Trainer(config(1)).run()
    saved = load_checkpoint(ckpt)
    save_checkpoint(ckpt, saved.model, saved.optimizer,
                    {**saved.meta, "distributed": {"axis": "replica", "world_size": 2}})  # as 2 replica ranks save
    for axis in (None, ReplicaAxis(Collectives())):
        with pytest.raises(CheckpointError, match="trained with 2 rank"):
            Trainer(config(2), axis=axis)


# -- one class, one configuration ----------------------------------------------------


def test_train_and_train_distributed_read_the_same_options_into_the_same_config(monkeypatch, user_files, tmp_path):
    """Every option of `train`, set away from its default, reaches the TrainConfig of both commands alike."""
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    import marketplace.training as training

    seen = {}

    class Capture:
        def __init__(self, config, hooks=(), **group):
            seen["distributed"] = config

        def run(self):
            return {}

    monkeypatch.setattr(training, "train", lambda config, hooks=(): seen.setdefault("train", config) and {})
    monkeypatch.setattr(training, "Trainer", Capture)
    npz, factory = user_files
    argv = ["--data", npz, "--model", f"{factory}:build", "--split", "2", "--vendors", "2,3", "--sampling", "0,2",
            "--dataset", "fashion-mnist", "--algorithm", "adaptive", "--batch", "16", "--lr", "0.2", "--decay",
            "0.001", "--probe-scale", "0.05", "--unit", "model", "--meta-lr", "0.2", "--rate-bounds", "0.5,2",
            "--rate-smoothing", "0.3", "--cheap-vendors", "0.5", "--optimizer", "adam", "--momentum", "0.5",
            "--nesterov", "--weight-decay", "0.1", "--schedule", "warmup-cosine", "--schedule-steps", "9",
            "--warmup", "2", "--min-lr", "0.1", "--probe-width", "0.01", "--attribution", "rank", "--direction",
            "raw", "--antithetic", "--clip", "1", "--steps", "5", "--max-seconds", "9", "--seed", "3", "--device",
            "cpu", "--eval-every", "4", "--eval-samples", "50", "--checkpoint", tmp_path / "c.safetensors",
            "--checkpoint-every", "7", "--resume", "--on-nonfinite", "skip", "--regenerate-deltas", "--data-dir",
            tmp_path, "--quiet"]
    for command in ("train", "train-distributed"):
        monkeypatch.setattr(sys, "argv", ["marketplace", command, *map(str, argv)])
        try:
            marketplace.cli.main()
        except SystemExit as e:
            assert e.code in (0, None), e
    assert dataclasses.asdict(seen["distributed"]) == dataclasses.asdict(seen["train"])
    config = seen["distributed"]
    assert config.data == str(npz) and config.split == (2,) and config.rate_bounds == (0.5, 2.0)
    assert config.per_spec is False and config.on_nonfinite == "skip" and config.cache_deltas is False


def test_the_trainer_takes_an_axis_and_a_world_of_one_is_the_plain_run(user_files, tmp_path):
    """Trainer(config, axis=DataAxis(...)) without a process group: the run of Trainer(config), bit for bit."""
    npz, factory = user_files
    config = lambda name: TrainConfig(data=str(npz), model=f"{factory}:build", split=(2,), vendors=(2, 3),
                                      batch=8, steps=2, device="cpu", checkpoint=str(tmp_path / name))
    plain = Trainer(config("plain.safetensors"))
    plain.run()
    alone = Trainer(config("alone.safetensors"), axis=DataAxis(Collectives()), check_every=1)
    summary = alone.run()
    for k, v in plain.market.state_dict().items():
        assert torch.equal(v, alone.market.state_dict()[k]), k
    assert summary["world_size"] == 1 and summary["axis"] == "data" and summary["bytes_per_step"] == 4 * 6
    assert "distributed" not in load_checkpoint(tmp_path / "plain.safetensors").meta
    assert load_checkpoint(tmp_path / "alone.safetensors").meta["model"]["input_shape"] == [3, 8, 8]


def test_a_missing_data_file_on_train_distributed_is_one_line(monkeypatch, capsys, tmp_path):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    code, out, err = run_cli(monkeypatch, capsys, "train-distributed", "--data", tmp_path / "none.npz",
                             "--steps", 1, "--device", "cpu", "--quiet")
    assert_user_error(code, out, err, "none.npz")


def test_train_distributed_names_the_market_trained_first_as_train_does(monkeypatch, capsys, user_files):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    npz, factory = user_files
    lines = {}
    for command in ("train", "train-distributed"):
        code, out, err = run_cli(monkeypatch, capsys, command, *user_flags(npz, factory, "--steps", 1))
        assert code == 0, err
        lines[command] = err.splitlines()[0]  # with --json, stdout holds only the JSON line
        assert last_json(out)["vendors_asked"] == [2, 3]
    assert lines["train-distributed"] == lines["train"]
    assert lines["train"].startswith("market ") and "asked 2,3" in lines["train"]
