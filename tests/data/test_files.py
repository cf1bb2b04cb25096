"""A user's data set from a .npz or .pt file: read without running code, every key checked."""

import numpy as np
import pytest
import torch

from marketplace.data import DataError, load_file


def arrays(n=12, m=5, shape=(1, 4, 4), classes=3, dtype=np.uint8):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, *shape)).astype(dtype)
    return {"x_train": x, "y_train": np.arange(n) % classes, "x_test": x[:m], "y_test": np.arange(m) % classes}


def test_npz_round_trip(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays())
    data = load_file(path)
    assert data.input_shape == (1, 4, 4) and data.classes == 3
    x, y = data.inputs("train", torch.device("cpu"))
    assert x.dtype == torch.float32 and abs(float(x.mean())) < 1e-5  # uint8 is scaled and standardised
    assert y.dtype == torch.int64 and y.tolist() == [i % 3 for i in range(12)]
    x_test, _ = data.inputs("test", torch.device("cpu"))
    torch.testing.assert_close(x_test, x[:5])  # with the training set's statistics


def test_pt_file_with_token_ids_and_a_classes_entry(tmp_path):
    path = tmp_path / "d.pt"
    tensors = {k: torch.as_tensor(v) for k, v in arrays(shape=(6,), dtype=np.int64).items()}
    torch.save({**tensors, "classes": 5}, path)
    data = load_file(path)
    assert data.classes == 5
    x, _ = data.inputs("test", torch.device("cpu"))
    assert x.dtype == torch.int64  # token ids stay integers, for an nn.Embedding


def test_float_inputs_are_used_as_given(tmp_path):
    path = tmp_path / "d.npz"
    a = arrays(dtype=np.float64)
    np.savez(path, **a)
    x, _ = load_file(path).inputs("train", torch.device("cpu"))
    torch.testing.assert_close(x, torch.from_numpy(a["x_train"]).float())


def _bad(**changes):
    a = arrays()
    a.update(changes)
    return {k: v for k, v in a.items() if v is not None}


@pytest.mark.parametrize("contents,message", [
    (_bad(y_test=None), "lacks y_test (it has x_train, y_train, x_test)"),
    (_bad(x_train=np.zeros(12)), "x_train must be [N, ...]"),
    (_bad(x_test=np.zeros((5, 1, 4, 3), np.uint8)), "x_test examples have shape [1, 4, 3] but x_train's have [1, 4, 4]"),
    (_bad(y_train=np.zeros(11, np.int64)), "y_train must be [12] (one label per row of x_train)"),
    (_bad(y_test=np.zeros(5, np.float32)), "y_test has dtype torch.float32; expected integer class labels"),
    (_bad(y_train=np.full(12, -1)), "y_train has a negative label"),
    (_bad(y_test=np.full(5, 7)), "y_test has label 7, outside 0..2"),
    (_bad(x_train=np.full((12, 2), np.nan)), "x_train holds NaN"),
    (_bad(x_train=np.array([["a", "b"]] * 12)), "x_train has dtype <U1"),
])
def test_wrong_contents_name_the_key(tmp_path, contents, message):
    path = tmp_path / "d.npz"
    np.savez(path, **contents)
    with pytest.raises(DataError) as info:
        load_file(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_files_that_need_code_to_load_are_refused(tmp_path):
    npz = tmp_path / "objects.npz"
    np.savez(npz, **{**arrays(), "x_train": np.array([object()] * 12)})
    with pytest.raises(DataError, match="allow_pickle"):
        load_file(npz)
    pt = tmp_path / "objects.pt"
    torch.save({**arrays(), "extra": object()}, pt)  # numpy arrays and an object: not weights
    with pytest.raises(DataError, match="not a readable .pt file of tensors"):
        load_file(pt)


@pytest.mark.parametrize("name,message", [("d.csv", "is .npz or .pt"), ("missing.npz", "no data file")])
def test_wrong_paths(tmp_path, name, message):
    with pytest.raises(DataError, match=message):
        load_file(tmp_path / name)


def test_a_corrupt_file_is_one_line(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_file(path)
