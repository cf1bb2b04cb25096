"""experiments/lib/continual.py: an existing pre-trained checkpoint is reused out loud, --fresh pre-trains again."""

from experiments.lib import continual


def stub(monkeypatch, calls):
    def pretrain(config, exclude):
        calls.append(("pretrain", config.steps))
        return {"test_accuracy": 50.0, "steps": config.steps}

    def run_experiment(config, hooks):
        calls.append(("run", config.checkpoint))
        return {"target_met": False}

    monkeypatch.setattr(continual, "pretrain", pretrain)
    monkeypatch.setattr(continual, "run_experiment", run_experiment)
    monkeypatch.setattr(continual, "plot_log", lambda log, out, title: None)
    monkeypatch.setattr(continual, "mlflow_hook", lambda: [])


def test_an_existing_checkpoint_is_reused_out_loud_and_fresh_pretrains(monkeypatch, capsys, tmp_path):
    calls = []
    stub(monkeypatch, calls)
    ckpt = tmp_path / "no9.safetensors"
    args = ["--checkpoint", str(ckpt), "--pretrain-steps", "7", "--out", str(tmp_path / "out")]
    continual.run_script("nine", "test", args)
    assert calls == [("pretrain", 7), ("run", str(ckpt))]
    ckpt.write_bytes(b"earlier")
    calls.clear()
    continual.run_script("nine", "test", args)
    assert calls == [("run", str(ckpt))]
    assert "--pretrain-steps and --pretrain-seconds do not apply" in capsys.readouterr().out
    continual.run_script("nine", "test", [*args, "--fresh"])
    assert calls[-2:] == [("pretrain", 7), ("run", str(ckpt))] and not ckpt.exists()  # stub pretrain wrote nothing
    assert (tmp_path / "out" / "nine.json").read_text().strip().startswith("{")
