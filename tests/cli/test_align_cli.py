"""`marketplace align`: the diagnostic from the command line, on a tiny market."""

from helpers import assert_user_error, last_json, run_cli

TINY = ["--batch", "8", "--batches", "2", "--device", "cpu"]


def test_align_prints_every_estimator_as_json(monkeypatch, capsys, small_data):
    code, out, err = run_cli(monkeypatch, capsys, "align", "--vendors", "2,2,2", *TINY, "--json",
                             "--data-dir", small_data)
    assert code == 0, err
    row = last_json(out)
    assert row["state"] == "init" and row["paths"] == 8 and row["vendors"] == [2, 2, 2]
    assert set(row["estimators"]) == {"zscore", "rank", "zscore-model", "best"}
    z = row["estimators"]["zscore"]
    assert z["batches"] == 2 and z["mean"]["directions"] == [1, 1, 1]
    for c, b in zip(z["mean"]["cosine"], z["mean"]["best_cosine"]):
        assert -1.0 <= c <= 1.0 and 0.0 < b <= 1.0


def test_align_reads_a_checkpoint_into_another_depth(monkeypatch, capsys, small_data, tmp_path):
    ckpt = tmp_path / "c.safetensors"
    code, _, err = run_cli(monkeypatch, capsys, "train", "--vendors", "2,2,2", "--steps", "1", "--batch", "8",
                           "--device", "cpu", "--quiet", "--checkpoint", ckpt, "--data-dir", small_data)
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, "align", "--checkpoint", ckpt, "--vendors", "3",
                             "--estimator", "zscore", *TINY, "--data-dir", small_data)
    assert code == 0, err
    assert "3 b8" in out and "zscore" in out and "rank" not in out


def test_align_refuses_bad_options_in_one_line(monkeypatch, capsys, small_data, tmp_path):
    for args, hint in ((["--estimator", "magic"], "--estimator"), (["--vendors", "4,x"], "--vendors"),
                       (["--batches", "0"], "--batches"), (["--probe-scale", "-1"], "probe_scale"),
                       (["--checkpoint", tmp_path / "none.safetensors"], "no checkpoint")):
        code, out, err = run_cli(monkeypatch, capsys, "align", *TINY, *args, "--data-dir", small_data)
        assert_user_error(code, out, err, hint)


def test_align_says_how_far_it_is_on_stderr(monkeypatch, capsys, small_data):
    """About 30 s at the defaults: off a terminal, a plain line per batch (rich would print nothing)."""
    code, out, err = run_cli(monkeypatch, capsys, "align", "--vendors", "2,2,2", *TINY, "--estimator", "zscore",
                             "--data-dir", small_data)
    assert code == 0, err
    assert "align: batch 1/2" in err and "align: batch 2/2" in err
    assert "align: batch" not in out
