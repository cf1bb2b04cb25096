"""What you ask is what you get, or the first line says otherwise: `marketplace train`'s market line.

The CLI's `--cheap-vendors` default raises the vendor counts of cheap specs;
the run's first line names the market trained and why, its JSON and log
record both, and the raised market stays within memory of the asked one.
"""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console

from helpers import last_json, run_cli
from marketplace.defaults import CLI_CHEAP_VENDORS
from marketplace.training import ProgressBar, TrainConfig, build_market, train
from marketplace.training.cheap_vendors import (MEMORY_FACTOR, cheap_vendors, describe_market, largest_activation,
                                                peak_activation)

TINY = ["--steps", "2", "--batch", "8", "--eval-samples", "100", "--device", "cpu"]


# -- the policy ---------------------------------------------------------------


def test_a_spec_cheap_in_flops_but_not_in_memory_stays():
    costs, acts = [100.0, 50.0, 1.0], [10, 10, 1000]  # the head: nearly free to run, wide to hold
    assert cheap_vendors(costs, (4, 4, 4), 0.16) == (4, 4, 16)  # FLOPs alone
    assert peak_activation(acts, (4, 4, 4)) == 64_000
    assert cheap_vendors(costs, (4, 4, 4), 0.16, activations=acts, memory_factor=2) == (4, 4, 8)
    assert cheap_vendors(costs, (4, 4, 4), 0.16, activations=acts, memory_factor=1) == (4, 4, 4)


def test_largest_activation_sees_inside_a_spec():
    spec = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 25, 3))
    assert largest_activation(spec, (1, 5, 5)) == (8 * 25, (3,))


def test_describe_market_says_what_changed_and_how_to_keep_the_counts():
    assert describe_market((4, 4, 4), (4, 4, 4), 0.1) == "4x4x4"
    text = describe_market((4, 4, 4), (4, 4, 64), 0.1)
    assert text.startswith("4x4x64 (asked 4,4,4; cheap_vendors=0.1 gave the head 64 vendors")
    assert "cheap_vendors=0 keeps your counts" in text
    assert "spec 0 8 and the head 16" in describe_market((4, 4, 4), (8, 4, 16), 0.2)
    halved = describe_market((4, 4, 4), (4, 4, 64), 0.1, [0.15, 0.15, 0.075])
    assert "the head 64 vendors at a lower rate (lr 0.15,0.15,0.075; --lr sets yours)" in halved


@pytest.mark.parametrize("overrides, rates", [
    (dict(), [0.15, 0.15, 0.075]),  # the CLI's default: the head cheap_vendors raised trains at half the rate
    (dict(lr=0.2), 0.2),  # a rate the user gives is the rate that runs
    (dict(lr=(0.2, 0.1, 0.3)), [0.2, 0.1, 0.3]),
    (dict(cheap_vendors=0.0), 0.15),  # nothing raised: one rate
    (dict(algorithm="v1"), 0.003),  # only V2's unit step is halved
])
def test_default_rates_halve_a_raised_spec_unless_a_rate_is_given(overrides, rates):
    from marketplace.training.build import build_optimizer, default_rates

    config = TrainConfig(**{"cheap_vendors": CLI_CHEAP_VENDORS, **overrides})
    market = build_market(config, torch.device("cpu"), (1, 28, 28), 10)
    assert default_rates(config, market.vendor_counts) == pytest.approx(rates)
    expected = rates if isinstance(rates, list) else [rates] * 3
    assert build_optimizer(config, market).lr == pytest.approx(expected)


def market_of(model, vendors, shape):
    config = TrainConfig(model=model, vendors=vendors, cheap_vendors=CLI_CHEAP_VENDORS)
    return build_market(config, torch.device("cpu"), shape, 10)


def test_the_cli_default_keeps_the_mnist_market():
    assert market_of("beautiful-mnist", (4, 4, 4), (1, 28, 28)).vendor_counts == (4, 4, 64)
    assert market_of("beautiful-mnist", (8, 8, 8), (1, 28, 28)).vendor_counts == (8, 8, 64)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["fashion-mnist", "cifar10"])
def test_the_resnet_command_stays_within_memory(shape):
    """`train --model resnet --vendors 4,4,4,4` once became 4x4x4x256: 26 GB of activations at batch 128."""
    market = market_of("resnet", (4, 4, 4, 4), shape)
    counts = market.vendor_counts
    assert counts[:3] == (4, 4, 4) and counts[3] < 256
    acts, shape_k = [], shape
    for spec in market.specs:
        a, shape_k = largest_activation(spec, shape_k)
        acts.append(a)
    asked, got = peak_activation(acts, (4, 4, 4, 4)), peak_activation(acts, counts)
    assert got <= MEMORY_FACTOR * asked
    assert got * 128 * 4 < 5e9  # bytes of the largest activation at the default batch, fp32


# -- the first line, the JSON and the log ---------------------------------------


def test_the_first_line_names_the_market_trained(monkeypatch, capsys, small_data):
    code, out, err = run_cli(monkeypatch, capsys, "train", "--vendors", "2,2,2", *TINY, "--quiet",
                             "--data-dir", small_data)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("market 2x2x128 (asked 2,2,2; cheap_vendors=0.1 gave the head 128 vendors"), lines
    assert "512 paths" in lines[0]
    assert lines[-1].startswith("test accuracy ") and "after 2 steps" in lines[-1]  # --quiet still says the result
    assert len(lines) == 2


def test_rates_you_give_are_not_described_as_lowered_and_a_clock_schedule_is_named(monkeypatch, capsys, small_data):
    code, out, err = run_cli(monkeypatch, capsys, "train", "--vendors", "2,2,2", "--lr", "0.2,0.2,0.1",
                             "--schedule", "cosine", "--max-seconds", "0.5", "--batch", "8", "--eval-samples", "100",
                             "--device", "cpu", "--quiet", "--data-dir", small_data)
    assert code == 0, err
    first = out.splitlines()[0]
    assert "gave the head 128 vendors;" in first and "lower rate" not in first
    assert "a cosine lr schedule over the 0.5-s budget (it follows the clock: give --steps" in first


def test_exact_counts_are_said_plainly(monkeypatch, capsys, small_data):
    code, out, err = run_cli(monkeypatch, capsys, "train", "--vendors", "2,2,2", "--cheap-vendors", "0", *TINY,
                             "--quiet", "--data-dir", small_data)
    assert code == 0, err
    assert out.splitlines()[0].startswith("market 2x2x2: 8 paths, v2 on mnist")


def test_json_and_log_record_the_market_and_the_counts_asked(monkeypatch, capsys, small_data, tmp_path):
    log = tmp_path / "run.jsonl"
    code, out, err = run_cli(monkeypatch, capsys, "train", "--vendors", "2,2,2", *TINY, "--json", "--log", log,
                             "--data-dir", small_data)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1  # --json: stdout is the JSON line alone
    result = last_json(out)
    assert result["vendors"] == [2, 2, 128] and result["vendors_asked"] == [2, 2, 2]
    assert err.splitlines()[0].startswith("market 2x2x128 (asked 2,2,2")  # the human lines go to stderr
    start = json.loads(log.read_text().splitlines()[0])
    assert start["event"] == "start" and start["vendors"] == [2, 2, 128]
    assert start["config"]["vendors"] == [2, 2, 2]


def test_progress_off_a_terminal_is_plain_lines(small_data):
    """rich draws nothing into a pipe until the end: captured output gets a line per evaluation instead."""
    buf = io.StringIO()
    config = TrainConfig(vendors=(2, 2), batch=8, steps=4, eval_every=2, eval_samples=100, device="cpu",
                         data_dir=str(small_data))
    train(config, hooks=[ProgressBar(Console(file=buf, width=120))])
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("step 1/4")  # the run has begun
    assert any(line.startswith("step 2/4") and "test " in line for line in lines)
    assert lines[-1].startswith("test accuracy")
