"""CIFAR-10 from pickle batches written by the test in the same format; never downloaded here."""

import hashlib
import pickle
import tarfile

import numpy as np
import pytest
import torch

from marketplace import data
from marketplace.data import DataError, cifar


def batch_bytes(n, seed, labels=None):
    """A batch as the CIFAR-10 files hold it: a protocol-2 pickle of a dict with bytes keys."""
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"testing batch", b"labels": labels if labels is not None else list(rng.integers(0, 10, n)),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
    batch[b"labels"] = [int(v) for v in batch[b"labels"]]
    return pickle.dumps(batch, protocol=2)


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    """tmp/cifar10/cifar-10-batches-py/ with small batches, their MD5s put in place of the real ones."""
    folder = tmp_path / "cifar10" / cifar.FOLDER
    folder.mkdir(parents=True)
    for i, name in enumerate(cifar.BATCH_MD5):
        raw = batch_bytes(4, i)
        (folder / name).write_bytes(raw)
        monkeypatch.setitem(cifar.BATCH_MD5, name, hashlib.md5(raw).hexdigest())
    return tmp_path


def test_parse_batch_reads_images_and_labels():
    images, labels = cifar.parse_batch(batch_bytes(3, 0, labels=[0, 9, 4]), "b")
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == [0, 9, 4]


def test_load_split_from_the_batch_folder(cifar_dir):
    x, y = data.load_split("cifar10", "train", cifar_dir)
    assert x.shape == (20, 3, 32, 32) and y.shape == (20,)
    raw = pickle.loads((cifar_dir / "cifar10" / cifar.FOLDER / "data_batch_1").read_bytes(), encoding="bytes")
    assert torch.equal(x[:4].reshape(4, -1), torch.from_numpy(raw[b"data"]))
    xt, yt = data.load_data("cifar10", "test", str(cifar_dir), torch.device("cpu"))
    assert xt.shape == (4, 3, 32, 32) and xt.dtype == torch.float32


def test_load_split_from_the_archive(cifar_dir, monkeypatch):
    archive = cifar_dir / "elsewhere" / cifar.ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_dir / "cifar10" / cifar.FOLDER, arcname=cifar.FOLDER)
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    x, _ = data.load_split("cifar10", "test", archive.parent)
    assert x.shape == (4, 3, 32, 32)
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", "0" * 32)
    with pytest.raises(DataError, match="MD5 checksum mismatch"):
        data.load_split("cifar10", "test", archive.parent)


def test_a_changed_batch_fails_its_checksum(cifar_dir):
    (cifar_dir / "cifar10" / cifar.FOLDER / "test_batch").write_bytes(batch_bytes(4, 99))
    with pytest.raises(DataError, match="MD5 checksum mismatch for CIFAR-10 test_batch"):
        data.load_split("cifar10", "test", cifar_dir)


class Boom:
    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.parametrize("raw,message", [
    (pickle.dumps({b"data": Boom()}, protocol=2), "refusing to load"),
    (pickle.dumps([1, 2]), "a list, not a dict"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), "'data' must be uint8 [N, 3072]"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "'labels' must be a list of 2"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "labels must lie in 0..9"),
    (b"garbage", "is not a CIFAR-10 batch"),
])
def test_bad_batches_are_refused_without_running_code(raw, message, capsys):
    with pytest.raises(DataError) as info:
        cifar.parse_batch(raw, "b")
    assert message in str(info.value)
    assert "unpickled!" not in capsys.readouterr().out


def test_missing_and_offline_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "default_cache_dir", lambda: tmp_path / "cache")
    monkeypatch.delenv("MARKETPLACE_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="CIFAR-10 not found.*downloading is off"):
        data.load_split("cifar10", "train", tmp_path / "nowhere")
