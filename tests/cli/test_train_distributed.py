"""Tests of `marketplace train-distributed`: a 2x2x2 CNN market on 8 MNIST images a step, on 2 gloo ranks."""

from __future__ import annotations

import inspect
import json
import sys

import pytest
import torch

import marketplace.training  # noqa: F401  imported here, so the forked ranks inherit it
from marketplace import data
from marketplace.distributed import run_local
from marketplace.training import TrainConfig, Trainer, load_checkpoint

from helpers import assert_close, succeeded

TINY = ["--vendors", "2,2,2", "--cheap-vendors", "0", "--batch", "8", "--eval-samples", "200", "--device", "cpu", "--quiet",
        "--json"]  # --cheap-vendors 0: exactly the 2x2x2 market of the single-process reference


@pytest.fixture(scope="module")
def warm_cli(tmp_path_factory):
    """Run `train-distributed --help` once here: the forked ranks then inherit the command modules
    and typer's lazy imports instead of compiling them again (no .pyc files are written here)."""
    code, out = cli_rank(0, 1, ["train-distributed", "--help"], tmp_path_factory.mktemp("help"))
    assert code == 0 and "--axis" in out and "--check-every" in out


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


def run_cli_ranks(world, argv, tmp_path):
    results = succeeded(run_local(cli_rank, world, [str(a) for a in argv], tmp_path, timeout=90))
    for code, out in results:
        assert code == 0, out
    assert all(out == "" for _, out in results[1:]), "only rank 0 prints"
    return json.loads(results[0][1].strip().splitlines()[-1])


@pytest.mark.usefixtures("warm_cli")
@pytest.mark.parametrize("axis", ["data", "replica"])
def test_train_distributed_on_two_ranks(small_data, tmp_path, axis):
    common = [*TINY, "--steps", "3", "--data-dir", small_data]
    reference = Trainer(TrainConfig(
        vendors=(2, 2, 2), batch=8, steps=3, eval_samples=200, device="cpu", data_dir=str(small_data),
        checkpoint=str(tmp_path / "single.safetensors")))
    single = reference.run()  # also loads the data into the small_data cache the ranks inherit
    ckpt = tmp_path / "dist.safetensors"
    summary = run_cli_ranks(2, ["train-distributed", "--axis", axis, *common, "--checkpoint", ckpt], tmp_path)
    assert summary["world_size"] == 2 and summary["axis"] == axis and summary["backend"] == "gloo"
    assert summary["steps"] == 3 and 0 <= summary["test_accuracy"] <= 100
    expected = 8 * 4 if axis == "data" else (1 + 2 * 6) * 8  # P = 8 floats; or seeds + attributions
    assert summary["bytes_per_step"] == expected
    dist_weights = load_checkpoint(ckpt).model
    if axis == "data":  # the same run as one process over the full batch
        assert_close(dist_weights, load_checkpoint(tmp_path / "single.safetensors").model)
        assert summary["test_accuracy"] == pytest.approx(single["test_accuracy"])  # split over the ranks
    assert load_checkpoint(ckpt).meta["distributed"]["world_size"] == 2


@pytest.mark.usefixtures("warm_cli")
def test_train_distributed_resumes_where_it_stopped(small_data, tmp_path):
    common = ["train-distributed", *TINY, "--data-dir", small_data]
    for split in ("train", "test"):  # cached here, inherited by the forked ranks
        data.load_data("mnist", split, str(small_data), torch.device("cpu"))
    run_cli_ranks(2, [*common, "--steps", "2", "--checkpoint", tmp_path / "a.safetensors"], tmp_path)
    b = tmp_path / "b.safetensors"
    run_cli_ranks(2, [*common, "--steps", "1", "--checkpoint", b], tmp_path)
    summary = run_cli_ranks(2, [*common, "--steps", "2", "--checkpoint", b, "--resume"], tmp_path)
    assert summary["steps"] == 2
    a_model, b_model = load_checkpoint(tmp_path / "a.safetensors").model, load_checkpoint(b).model
    for k in a_model:
        assert torch.equal(a_model[k], b_model[k]), k
    other = [str(a) for a in (*common, "--steps", "3", "--checkpoint", b, "--resume", "--probe-scale", "0.1")]
    refused = succeeded(run_local(cli_rank, 2, other, tmp_path, timeout=90))
    assert [code for code, _ in refused] == [2, 2]  # rank 0 read the other settings; every rank stops


@pytest.mark.usefixtures("warm_cli")
def test_ranks_agree_when_to_stop_on_max_seconds(small_data, tmp_path):
    for split in ("train", "test"):
        data.load_data("mnist", split, str(small_data), torch.device("cpu"))
    argv = ["train-distributed", *TINY, "--max-seconds", "1", "--data-dir", small_data]
    summary = run_cli_ranks(2, argv, tmp_path)  # a rank that stopped alone would leave the other hanging
    assert summary["steps"] >= 1
    assert summary["bytes"]["control"]["calls"] == summary["steps"] + 1  # rank 0's decision, every step


def test_train_distributed_without_torchrun_is_train_bit_for_bit(small_data, tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    common = [*TINY, "--steps", "2", "--data-dir", str(small_data)]
    code, out = cli_rank(0, 1, ["train-distributed", *common, "--checkpoint", str(tmp_path / "d.safetensors")],
                         tmp_path)
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["world_size"] == 1 and summary["backend"] == "none" and summary["bytes_per_step"] == 32
    code, out = cli_rank(0, 1, ["train", *common, "--checkpoint", str(tmp_path / "s.safetensors")], tmp_path)
    assert code == 0, out
    single, dist = (load_checkpoint(tmp_path / f"{n}.safetensors").model for n in "sd")
    for k in single:
        assert torch.equal(single[k], dist[k]), k


def test_train_distributed_takes_every_option_of_train():
    from marketplace.cli.distributed import train_distributed
    from marketplace.cli.train import train

    ours = set(inspect.signature(train_distributed).parameters)
    assert set(inspect.signature(train).parameters) <= ours
    assert {"axis", "backend", "timeout", "check_every"} <= ours


@pytest.mark.parametrize("args, hint", [
    (["--axis", "replica", "--algorithm", "adaptive"], "data axis only"),
    (["--axis", "diagonal"], "unknown --axis"),
    (["--timeout", "0"], "--timeout"),
    (["--backend", "mpi"], "unknown --backend"),
])
def test_train_distributed_mistakes_are_one_line(small_data, tmp_path, monkeypatch, capsys, args, hint):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["marketplace", "train-distributed", *TINY, "--steps", "1",
                                      "--data-dir", str(small_data), *args])
    from marketplace.cli import main

    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert err.strip().startswith("error:") and hint in err, err


@pytest.mark.usefixtures("warm_cli")
def test_the_data_axis_drives_a_torch_optimizer_and_schedule_like_one_process(small_data, tmp_path):
    """--optimizer/--schedule on the data axis: the ranks' summed losses feed the same torch.optim step."""
    options = dict(optimizer="momentum", nesterov=True, schedule="cosine", clip=1.0)
    reference = Trainer(TrainConfig(vendors=(2, 2, 2), batch=8, steps=3, eval_samples=200, device="cpu",
                                    data_dir=str(small_data), checkpoint=str(tmp_path / "single.safetensors"),
                                    **options))
    reference.run()
    ckpt = tmp_path / "dist.safetensors"
    run_cli_ranks(2, ["train-distributed", "--axis", "data", *TINY, "--steps", "3", "--data-dir", small_data,
                      "--optimizer", "momentum", "--nesterov", "--schedule", "cosine", "--clip", "1.0",
                      "--checkpoint", ckpt], tmp_path)
    assert_close(load_checkpoint(ckpt).model, load_checkpoint(tmp_path / "single.safetensors").model)
    saved = load_checkpoint(ckpt).optimizer
    assert saved["algorithm"] == load_checkpoint(tmp_path / "single.safetensors").optimizer["algorithm"]
