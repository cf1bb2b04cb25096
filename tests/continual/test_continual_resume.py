"""Continual runs that survive: checkpoints, exact resume, a killed run, the progress output, the log."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from rich.console import Console

from marketplace.continual.config import ContinualConfig
from marketplace.continual.experiment import ContinualRun, run_experiment
from marketplace.continual.report import PrintProgress, read_log
from marketplace.training import JsonLog, load_checkpoint

from helpers import no9_base

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def base(monkeypatch, capsys, small_data, tmp_path):
    """A digits-0-8 base made by one training step of a 2x2x2 market (cheap; only the mechanics matter)."""
    path = tmp_path / "no9.safetensors"
    no9_base(monkeypatch, capsys, small_data, path)
    return path


def config(base, data_dir, tmp_path, **kw) -> ContinualConfig:
    settings = dict(experiment="nine", checkpoint=str(base), steps=6, old_per_step=12, new_per_step=4,
                    vendors=(2, 2, 2), lr=0.05, eval_every=3, eval_samples=40, log_every=2, device="cpu",
                    data_dir=str(data_dir), save=str(tmp_path / "run.safetensors"), checkpoint_every=2, augment=True)
    settings.update(kw)
    return ContinualConfig(**settings)


def test_resumed_run_equals_an_uninterrupted_one(base, small_data, tmp_path):
    whole = run_experiment(config(base, small_data, tmp_path / "a"))
    first = run_experiment(config(base, small_data, tmp_path / "b", steps=4))  # stops at step 4, checkpointed
    assert first["steps"] == 4
    resumed = ContinualRun(config(base, small_data, tmp_path / "b", resume=True))
    assert resumed.step == 4
    rest = resumed.run()
    a = load_checkpoint(tmp_path / "a" / "run.safetensors")
    b = load_checkpoint(tmp_path / "b" / "run.safetensors")
    assert a.meta["step"] == b.meta["step"] == 6
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
    for key in ("augmenter", "generator", "optimizer/steps"):
        value_a, value_b = a.optimizer[key], b.optimizer[key]
        assert torch.equal(value_a, value_b) if isinstance(value_a, torch.Tensor) else value_a == value_b, key
    assert rest["val_new_end"] == whole["val_new_end"] and rest["learner_updates"] == whole["learner_updates"] == 6
    assert rest["val_old_start"] == whole["val_old_start"]  # the start's validation travels in the checkpoint


def test_resume_refuses_other_learning_settings(base, small_data, tmp_path):
    run_experiment(config(base, small_data, tmp_path, steps=2))
    with pytest.raises(Exception, match="lr=0.05 \\(now 0.1\\)"):
        ContinualRun(config(base, small_data, tmp_path, resume=True, lr=0.1))
    with pytest.raises(Exception, match="already at step 2"):
        ContinualRun(config(base, small_data, tmp_path, resume=True, steps=1))


def test_a_run_saved_before_the_attribution_setting_resumes_only_with_zscores():
    saved = {k: list(v) if isinstance(v, tuple) else v
             for k, v in asdict(ContinualConfig(attribution="zscore")).items() if k != "attribution"}
    assert ContinualConfig(attribution="zscore").resume_differences(saved) == []
    assert ContinualConfig().resume_differences(saved) == ["attribution='zscore' (now 'rank')"]


def test_resumed_log_reads_as_one_run(base, small_data, tmp_path):
    log = tmp_path / "run.jsonl"
    run_experiment(config(base, small_data, tmp_path, steps=4), [JsonLog(log)])
    with log.open("a") as f:  # rows a killed run wrote after its last checkpoint
        f.write(json.dumps({"event": "step", "step": 5, "seconds": 1.0, "learn_new_accuracy": 0.0}) + "\n")
    run_experiment(config(base, small_data, tmp_path, steps=8, resume=True), [JsonLog(log)])
    steps, start, end = read_log(log)
    logged = [r["step"] for r in steps]
    assert logged == sorted(set(logged)) and logged[0] == 0 and logged[-1] == 8
    assert start["step"] == 4 and end["steps"] == 8


def test_progress_off_a_terminal_shows_rate_and_eta(base, small_data, tmp_path):
    buffer = io.StringIO()
    progress = PrintProgress(every_seconds=0.0, console=Console(file=buffer, force_terminal=False, width=200))
    run_experiment(config(base, small_data, tmp_path, steps=3, save=None), [progress])
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("continual nine: market 2x2x2, 3 steps, from step 0")
    ticks = [line for line in lines if line.startswith("step ")]
    assert len(ticks) >= 3 and all("steps/s" in line and "eta" in line for line in ticks)
    assert "val old" in ticks[-1] and lines[-1].startswith("nine: digit 9")


def test_killed_script_resumes_to_the_same_weights(base, small_data, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, str(ROOT / "experiments" / "continual_nine.py"), "--checkpoint", str(base),
            "--steps", "400", "--old-per-step", "12", "--new-per-step", "4", "--vendors", "2,2,2", "--lr", "0.05",
            "--eval-every", "1000", "--eval-samples", "40", "--log-every", "1", "--checkpoint-every", "3",
            "--device", "cpu", "--data-dir", str(small_data), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    save, deadline = out / "nine.safetensors", time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if save.exists() and load_checkpoint(save).meta["step"] >= 6:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(save).meta["step"]
    assert 6 <= killed_at < 400, "the run finished before it could be killed"
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "--resume" in again.stderr  # an existing run is never overwritten silently
    target = killed_at + 6
    resumed = subprocess.run(args[:5] + [str(target)] + args[6:] + ["--resume"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {killed_at}" in resumed.stderr.splitlines()[0]
    whole = tmp_path / "whole"
    ContinualRun(config(base, small_data, whole, steps=target, augment=False, eval_every=1000, log_every=1,
                        checkpoint_every=3, attribution="zscore", balanced=False)).run()  # the script's defaults
    a, b = load_checkpoint(save), load_checkpoint(whole / "run.safetensors")
    assert a.meta["step"] == b.meta["step"] == target
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    steps, _, _ = read_log(out / "nine.jsonl")
    assert [r["step"] for r in steps] == list(range(0, target + 1))


def test_rate_schedule_holds_then_decays_to_lr_end():
    from marketplace.continual.config import scheduled_rate

    cfg = ContinualConfig(steps=100, lr=0.1, lr_end=0.01, lr_hold=50)
    rates = [scheduled_rate(cfg, s) for s in range(101)]
    assert rates[:51] == [0.1] * 51
    assert all(a > b for a, b in zip(rates[50:], rates[51:]))
    assert rates[75] == pytest.approx(0.1 * 0.1 ** 0.5) and rates[100] == pytest.approx(0.01)
    assert {scheduled_rate(ContinualConfig(steps=100, lr=0.1), s) for s in range(101)} == {0.1}
    with pytest.raises(Exception, match="lr_end must be positive"):
        ContinualConfig(lr_end=0.0).validate()


def test_resumed_run_follows_the_rate_schedule(base, small_data, tmp_path):
    schedule = dict(lr_end=0.005, lr_hold=4)  # the interrupted run stops where the decay starts
    run_experiment(config(base, small_data, tmp_path / "a", **schedule))
    run_experiment(config(base, small_data, tmp_path / "b", steps=4, **schedule))
    run_experiment(config(base, small_data, tmp_path / "b", resume=True, **schedule))
    a = load_checkpoint(tmp_path / "a" / "run.safetensors")
    b = load_checkpoint(tmp_path / "b" / "run.safetensors")
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
    last_rate = 0.05 * (0.005 / 0.05) ** 0.5  # the rate of step 5, the last one
    assert a.meta["config"]["lr_end"] == 0.005
    assert float(torch.as_tensor(a.optimizer["optimizer/lr"]).reshape(-1)[0]) == pytest.approx(last_rate)


def test_partial_learning_moves_only_biases_norms_and_the_head(base, small_data, tmp_path):
    buffer = io.StringIO()
    run = ContinualRun(config(base, small_data, tmp_path, learn="partial", save=None),
                       [PrintProgress(console=Console(file=buffer, force_terminal=False, width=200))])
    start = {k: v.clone() for k, v in run.market.state_dict().items()}
    assert run.market.frozen_parameters > 0
    run.run()
    assert f"{run.market.frozen_parameters:,} parameters frozen (learn=partial)" in buffer.getvalue().splitlines()[0]
    head = f"specs.{run.market.depth - 1}."
    for key, value in run.market.state_dict().items():
        moved = not torch.equal(value, start[key])
        assert moved == (value.dim() == 1 or key.startswith(head)), key
    with pytest.raises(Exception, match="learn"):
        ContinualConfig(learn="kernels").validate()


def test_a_mirrored_run_resumes_exactly_and_only_mirrored(base, small_data, tmp_path):
    whole = run_experiment(config(base, small_data, tmp_path / "a", mirrored=True))
    run_experiment(config(base, small_data, tmp_path / "b", mirrored=True, steps=4))
    rest = ContinualRun(config(base, small_data, tmp_path / "b", mirrored=True, resume=True)).run()
    a, b = (load_checkpoint(tmp_path / d / "run.safetensors") for d in "ab")
    assert all(torch.equal(a.model[key], b.model[key]) for key in a.model)
    assert rest["val_new_end"] == whole["val_new_end"] and a.meta["config"]["mirrored"] is True
    with pytest.raises(Exception, match="mirrored=True \\(now False\\)"):
        ContinualRun(config(base, small_data, tmp_path / "b", resume=True, steps=8))


def test_fewer_records_than_images_serve_in_batches_and_resume_exactly(base, small_data, tmp_path):
    # 16 images a step, K = 6: batches of 6, 6, 4 | 2, 6, 6, 2 | ...; a buffer of 4 waits across the checkpoint
    whole = run_experiment(config(base, small_data, tmp_path / "a", records=6))
    assert whole["learner_updates"] == 6 * 16 // 6 and whole["learner_stale"] == 0
    assert whole["learner_recorded"] == 6 * 16
    run_experiment(config(base, small_data, tmp_path / "b", records=6, steps=4))
    b_state = load_checkpoint(tmp_path / "b" / "run.safetensors").optimizer
    assert b_state["buffer_losses"].numel() == 4 * 16 % 6
    rest = ContinualRun(config(base, small_data, tmp_path / "b", records=6, resume=True)).run()
    a, b = (load_checkpoint(tmp_path / d / "run.safetensors") for d in "ab")
    assert all(torch.equal(a.model[key], b.model[key]) for key in a.model)
    assert rest["learner_updates"] == whole["learner_updates"]


def test_records_below_two_are_refused_before_any_data_is_read():
    for bad in (0, 1, -3):  # 0 is not "the default": None is
        with pytest.raises(Exception, match=f"records must be >= 2, got {bad}"):
            ContinualConfig(records=bad).validate()
    ContinualConfig(records=2).validate()
