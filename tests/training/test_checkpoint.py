"""Tests of marketplace.training.checkpoint: round trip, atomic writes, one-line errors on bad files."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import marketplace.training.checkpoint as checkpoint_module
from marketplace import V1, V2, Market, mlp
from marketplace.training.checkpoint import FORMAT, Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from marketplace.errors import MarketplaceError


def sample_state():
    g = torch.Generator().manual_seed(0)
    model = {
        "specs.0.0.weight": torch.randn(3, 4, generator=g),
        "specs.0.0.bias": torch.randn(3, generator=g),
        "specs.1.0.weight": torch.randn(2, 3, generator=g).half(),
        "counter": torch.arange(5, dtype=torch.int64),
        "scalar": torch.tensor(2.5),
    }
    optimizer = {
        "algorithm": "v2",
        "steps": 7,
        "skipped": 1,
        "lr": [0.1, 0.05, 0.025],
        "decay": 1e-5,
        "seed": 1234,
        "vendor_counts": [2, 3, 4],
        "seeds": [torch.tensor([1, -2], dtype=torch.int64), torch.tensor([3, 4, 5], dtype=torch.int64),
                  torch.tensor([2**62, -(2**62), 0, 9], dtype=torch.int64)],
        "momentum": torch.linspace(0, 1, 6),
        "per_spec": True,
        "empty": [],
    }
    meta = {"config": {"vendors": [2, 3, 4], "dataset": "mnist", "sampling": None}, "seconds": 1.25,
            "test_accuracy": 97.5}
    return model, optimizer, meta


def assert_tensor_dicts_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def assert_one_line_naming(error: Exception, path) -> None:
    message = str(error)
    assert isinstance(error, MarketplaceError)
    assert str(path) in message, message
    assert "\n" not in message.strip(), message
    assert message.strip(), "empty message"


# -- round trip -------------------------------------------------------------


def test_round_trip_model_optimizer_and_meta(tmp_path):
    model, optimizer, meta = sample_state()
    path = tmp_path / "run.safetensors"
    save_checkpoint(path, model, optimizer, meta)
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert_tensor_dicts_equal(ckpt.model, model)

    assert set(ckpt.optimizer) == set(optimizer)
    for key, value in optimizer.items():
        loaded = ckpt.optimizer[key]
        if isinstance(value, torch.Tensor):
            assert loaded.dtype == value.dtype and torch.equal(loaded, value), key
        elif key == "seeds":
            assert isinstance(loaded, list) and len(loaded) == len(value)
            for a, b in zip(loaded, value):
                assert a.dtype == torch.int64 and torch.equal(a, b)
        else:
            assert loaded == value, key
    assert ckpt.meta == meta


def test_round_trip_accepts_str_path_and_creates_parent_dirs(tmp_path):
    model, optimizer, meta = sample_state()
    path = tmp_path / "a" / "b" / "ckpt.safetensors"
    save_checkpoint(str(path), model, optimizer, meta)
    assert path.is_file()
    assert load_checkpoint(str(path)).meta == meta


@pytest.mark.parametrize("opt_cls", [V1, V2])
def test_real_optimizer_state_survives_a_round_trip(tmp_path, opt_cls):
    """A market and its optimizer after a few steps restore exactly into fresh objects."""
    torch.manual_seed(0)
    market = Market(mlp([6, 5, 3]), [2, 3])
    opt = opt_cls(market, lr=0.05, decay=0.01, seed=42)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    for _ in range(3):
        logits = market.evaluate(x, opt.vendors)
        losses = torch.nn.functional.cross_entropy(
            logits.products.reshape(-1, 3), y.repeat(logits.products.shape[0]), reduction="none"
        ).view(logits.products.shape[0], -1).mean(1)
        opt.step(losses, logits.paths)
    path = tmp_path / "opt.safetensors"
    save_checkpoint(path, market.state_dict(), opt.state_dict(), {"note": "x"})

    ckpt = load_checkpoint(path)
    torch.manual_seed(1)  # a different init: everything must come from the file
    market2 = Market(mlp([6, 5, 3]), [2, 3])
    opt2 = opt_cls(market2, lr=0.3, decay=0.0, seed=42)
    market2.load_state_dict(ckpt.model)
    opt2.load_state_dict(ckpt.optimizer)

    assert_tensor_dicts_equal(market2.state_dict(), market.state_dict())
    assert opt2.steps == opt.steps == 3
    assert opt2.lr == opt.lr
    assert opt2.decay == opt.decay
    for a, b in zip(opt2.vendors.seeds, opt.vendors.seeds):
        assert torch.equal(a, b)


def test_save_overwrites_previous_checkpoint(tmp_path):
    model, optimizer, meta = sample_state()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, optimizer, meta)
    optimizer["steps"] = 8
    model["counter"] = model["counter"] + 1
    save_checkpoint(path, model, optimizer, {**meta, "seconds": 2.0})
    ckpt = load_checkpoint(path)
    assert ckpt.optimizer["steps"] == 8
    assert torch.equal(ckpt.model["counter"], torch.arange(1, 6))
    assert ckpt.meta["seconds"] == 2.0


# -- atomic writes ----------------------------------------------------------


def test_save_leaves_no_temporary_files(tmp_path):
    model, optimizer, meta = sample_state()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, optimizer, meta)
    save_checkpoint(path, model, optimizer, meta)
    assert sorted(os.listdir(tmp_path)) == ["c.safetensors"]


def _failing_save_file(tensors, filename, metadata=None):
    """Write half a file, then fail, as a full disk or a kill would."""
    with open(filename, "wb") as f:
        f.write(b"\x00" * 100)
    raise OSError(28, "No space left on device")


def test_failed_save_keeps_previous_checkpoint_and_leaves_no_temp(tmp_path, monkeypatch):
    model, optimizer, meta = sample_state()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, optimizer, meta)
    before = path.read_bytes()

    monkeypatch.setattr(checkpoint_module, "save_file", _failing_save_file)
    optimizer["steps"] = 99
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model, optimizer, meta)

    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.safetensors"]
    assert load_checkpoint(path).optimizer["steps"] == 7


def test_failed_first_save_creates_nothing(tmp_path, monkeypatch):
    model, optimizer, meta = sample_state()
    monkeypatch.setattr(checkpoint_module, "save_file", _failing_save_file)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "c.safetensors", model, optimizer, meta)
    assert os.listdir(tmp_path) == []


def test_failed_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer, meta = sample_state()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, optimizer, meta)
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(checkpoint_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        save_checkpoint(path, model, {**optimizer, "steps": 100}, meta)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.safetensors"]


# -- bad files --------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert_one_line_naming(info.value, tmp_path)


def _valid_bytes(tmp_path) -> bytes:
    model, optimizer, meta = sample_state()
    src = tmp_path / "valid.safetensors"
    save_checkpoint(src, model, optimizer, meta)
    data = src.read_bytes()
    src.unlink()
    return data


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda valid: os.urandom(4096), id="random-bytes"),
        pytest.param(lambda valid: b"", id="empty"),
        pytest.param(lambda valid: valid[: len(valid) // 2], id="truncated-half"),
        pytest.param(lambda valid: valid[:-1], id="truncated-one-byte"),
        pytest.param(lambda valid: valid[:6], id="truncated-in-length"),
        pytest.param(lambda valid: valid[:40], id="truncated-in-header"),
        pytest.param(lambda valid: b"{}" + valid, id="garbage-prefix"),
    ],
)
def test_corrupt_files_raise_checkpoint_error(tmp_path, make):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(make(_valid_bytes(tmp_path)))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)
    assert FORMAT in str(info.value)


def test_foreign_safetensors_file_without_metadata(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)


def test_damaged_metadata(tmp_path):
    path = tmp_path / "damaged.safetensors"
    save_file({"model.w": torch.zeros(2)}, str(path),
              metadata={"format": FORMAT, "optimizer": "{not json", "meta": "{}"})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)


def test_our_format_with_a_missing_seed_tensor(tmp_path):
    """Metadata promises 2 seed tensors that are not in the file: a CheckpointError, not a KeyError."""
    path = tmp_path / "partial.safetensors"
    save_file({"model.w": torch.zeros(2)}, str(path),
              metadata={"format": FORMAT, "optimizer": json.dumps({"__list__seeds": 2}), "meta": "{}"})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)
