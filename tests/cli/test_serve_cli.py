"""`marketplace serve` refuses bad arguments with one line, before it listens anywhere."""

import pytest

from helpers import assert_user_error, run_cli, tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.safetensors")


def test_a_missing_checkpoint_is_one_line(monkeypatch, capsys, tmp_path):
    assert_user_error(*run_cli(monkeypatch, capsys, "serve", tmp_path / "nope.safetensors", "--token", "t",
                               "--store", tmp_path / "s"), "no checkpoint")


@pytest.mark.parametrize("args, hint", [
    (("--records", "1"), "--records"), (("--lr", "0"), "--lr"), (("--unit", "layer"), "--unit"),
    (("--max-request", "600"), "--max-request"), (("--batch-window-ms", "-1"), "--batch-window-ms"),
    (("--classes", "5"), "narrow"), (("--keep-served", "0"), "--keep-served"),
    (("--client-rate", "-1"), "--client-rate"), (("--client-burst", "0"), "--client-burst"),
    (("--max-head", "100"), "--max-head"),
])
def test_bad_options_are_one_line(monkeypatch, capsys, tmp_path, checkpoint, args, hint):
    assert_user_error(*run_cli(monkeypatch, capsys, "serve", checkpoint, "--token", "t", "--store", tmp_path / "s",
                               *args), hint)


def test_a_store_that_is_a_file_is_refused(monkeypatch, capsys, tmp_path, checkpoint):
    (tmp_path / "file").write_text("x")
    assert_user_error(*run_cli(monkeypatch, capsys, "serve", checkpoint, "--token", "t", "--store",
                               tmp_path / "file"), "directory")


def test_the_default_store_is_one_per_checkpoint(monkeypatch, capsys, tmp_path):
    """One shared default store refused the second checkpoint served ("made for other starting weights")."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)  # build the engine, listen nowhere
    monkeypatch.chdir(tmp_path)
    first, second = tiny_checkpoint(tmp_path / "a.safetensors"), tiny_checkpoint(tmp_path / "b.safetensors", seed=1)
    runs = ((first, ()), (second, ()), (second, ("--baseline",)), (first, ("--attribution", "zscore")),
            (first, ()))  # the last resumes the first
    for ckpt, extra in runs:
        code, out, err = run_cli(monkeypatch, capsys, "serve", ckpt, "--token", "t", *extra)
        assert code == 0, err
        assert "runs/server/" in err.splitlines()[0]
    stores = sorted(p.name for p in (tmp_path / "runs" / "server").iterdir())
    assert len(stores) == 4 and sum(s.endswith("-baseline-rank") for s in stores) == 1
    # rank, the default, has a store of its own: one made under zscore keeps its name and is never reused by it
    a = sorted(s for s in stores if s.startswith("a-"))
    assert len(a) == 2 and a[1] == a[0] + "-rank"


def test_a_store_made_under_zscore_refuses_a_rank_server(monkeypatch, capsys, tmp_path, checkpoint):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    store = ("--token", "t", "--store", tmp_path / "s")
    code, out, err = run_cli(monkeypatch, capsys, "serve", checkpoint, *store, "--attribution", "zscore")
    assert code == 0, err
    assert_user_error(*run_cli(monkeypatch, capsys, "serve", checkpoint, *store),
                      "zscore attribution, not rank", "attribution zscore")
