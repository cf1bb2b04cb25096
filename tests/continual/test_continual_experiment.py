"""Tests of the published continual experiments: head widening, the stream, the CLI and the scripts."""

import importlib.util
import json

import pytest
import torch

from marketplace import Market

from helpers import last_json, no9_base, run_cli

def test_widening_the_head_keeps_every_old_prediction():
    from marketplace.continual.pretrain import widen_head
    from marketplace.models import beautiful_mnist

    torch.manual_seed(0)
    market = Market(beautiful_mnist(3), [2, 2, 2])
    x = torch.randn(16, 1, 28, 28)
    before = market(x)
    wide = widen_head(market, 11)
    after = wide(x)
    assert after.shape == (16, 11) and wide.layouts[2].numel == 576 * 11 + 11
    assert torch.allclose(after[:, :10], before, atol=1e-6)
    assert torch.allclose(after[:, 10], before.mean(1), atol=1e-5)
    assert torch.equal(after.argmax(1), before.argmax(1))


def test_shift_augment_moves_images_within_two_pixels():
    from marketplace.continual.stream import shift_augment

    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 14, 14] = 1.0
    shifted = shift_augment(x, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape
    rows, cols = (shifted[:, 0] == 1.0).nonzero()[:, 1:].T
    assert len(rows) == 64 and (rows - 14).abs().max() <= 2 and (cols - 14).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5


def test_cli_dress_and_nine_run_log_and_plot(monkeypatch, capsys, small_data, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # used only if mlflow imports
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    digits, no9 = tmp_path / "digits.safetensors", tmp_path / "no9.safetensors"
    tiny = ["--steps", "1", "--batch", "8", "--eval-samples", "50", "--device", "cpu", "--quiet",
            "--data-dir", small_data]
    code, out, err = run_cli(monkeypatch, capsys, "train", "--vendors", "2,2,2", *tiny, "--checkpoint", digits)
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, "continual", "pretrain", "--exclude", "9", "--vendors", "2,2,2",
                             *tiny, "--checkpoint", no9, "--json")
    assert code == 0, err
    assert last_json(out)["exclude"] == [9]
    run = ["--steps", "2", "--old-per-step", "12", "--new-per-step", "4", "--eval-every", "1",
           "--eval-samples", "50", "--device", "cpu", "--data-dir", small_data, "--json"]
    for name, ckpt, extra in (("dress", digits, []), ("dress-class10", digits, []), ("nine", no9, ["--baseline"])):
        log, png = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.png"
        code, out, err = run_cli(monkeypatch, capsys, "continual", name, "--checkpoint", ckpt, *run, *extra,
                                 "--log", log, "--plot", png)
        assert code == 0, err
        summary = last_json(out)
        assert summary["experiment"] == name and summary["steps"] == 2 and summary["learner_updates"] == 2
        records = [json.loads(line) for line in log.read_text().splitlines()]
        steps = [r for r in records if r["event"] == "step"]
        assert [r["step"] for r in steps] == [0, 1, 2]
        assert {"learn_old_accuracy", "learn_new_loss", "val_old_accuracy", "val_new_accuracy"} <= set(steps[1])
        assert png.stat().st_size > 10_000
    if importlib.util.find_spec("mlflow") is not None:  # optional: both runs were logged there too
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
        runs = client.search_runs([client.get_experiment_by_name("marketplace-continual").experiment_id])
        assert len(runs) == 3 and all("final_val_new_end" in r.data.metrics for r in runs)
    code, out, err = run_cli(monkeypatch, capsys, "continual", "nine", "--checkpoint", tmp_path / "missing",
                             *run)
    assert code == 2 and err.startswith("error:") and "no checkpoint" in err


def test_experiment_script_runs_and_writes_results(monkeypatch, capsys, small_data, tmp_path):
    import importlib.util as util
    from pathlib import Path

    base = tmp_path / "no9.safetensors"
    no9_base(monkeypatch, capsys, small_data, base)
    path = Path(__file__).resolve().parents[2] / "experiments" / "continual_nine.py"
    spec = util.spec_from_file_location("continual_nine", path)
    script = util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--steps", "2", "--eval-every", "1", "--eval-samples", "50", "--device", "cpu", "--vendors", "2,2,2",
            "--data-dir", str(small_data), "--out", str(tmp_path / "out")]
    summary = script.main(["--checkpoint", str(base), *args])
    assert summary["experiment"] == "nine" and summary["learner_updates"] == 2
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"nine.jsonl", "nine.png", "nine.json",
                                                              "nine.safetensors"}
    assert json.loads((tmp_path / "out" / "nine.json").read_text())["steps"] == 2
    from marketplace.training import load_checkpoint

    saved = load_checkpoint(tmp_path / "out" / "nine.safetensors").meta["config"]
    assert saved["attribution"] == "zscore"  # the scripts keep the published rule; ContinualConfig's is rank
    for argv in (["--checkpoint", str(tmp_path / "missing.safetensors"), *args, "--out", str(tmp_path / "o2")],
                 ["--checkpoint", str(base), *args]):  # no base; a run that exists without --resume
        with pytest.raises(SystemExit) as e:
            script.main(argv)
        assert str(e.value.code).startswith("error:") and "\n" not in str(e.value.code)
    with pytest.raises(SystemExit) as e:  # a setting's error names the flag the user typed
        script.main(["--checkpoint", str(base), *args, "--out", str(tmp_path / "o3"), "--lr-hold", "-1"])
    assert str(e.value.code) == "error: --lr-hold must be >= 0, got -1"
