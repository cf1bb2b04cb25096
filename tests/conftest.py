"""Shared fixtures: the development copy of the data, offline mode, small data for speed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The development copy beside the checkout, or MARKETPLACE_DATA_DIR (a GPU machine carries its own copy).
SHARED_DATA = Path(os.environ.get("MARKETPLACE_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SMALL_TEST_SET = 200  # test examples kept by the `small_data` fixture

_cache: dict[tuple[str, str, str], tuple] = {}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The development copy of MNIST (DIR/mnist/*.gz); skip when it is absent (no downloads here)."""
    mnist = SHARED_DATA / "mnist"
    missing = [f for f in MNIST_FILES if not ((mnist / f).is_file() or (mnist / f"{f}.gz").is_file())]
    if missing:
        pytest.skip(f"MNIST data absent: {mnist} lacks {', '.join(missing)} (tests never download)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may reach the network for data."""
    monkeypatch.setenv("MARKETPLACE_OFFLINE", "1")


@pytest.fixture
def small_data(monkeypatch, data_dir):
    """Make training runs cheap on a 2-core machine.

    `marketplace.data.load_data` (used by every trainer and by `marketplace evaluate`)
    is wrapped so that the shared data set is decoded once per session and the
    test split is cut to SMALL_TEST_SET examples: a run's final evaluation is on
    the *whole* test split, 10,000 CNN forward passes that cost ~10 s on CPU.
    Any other data directory goes to the real loader untouched (so missing-data
    errors are still the library's own).
    """
    import marketplace.data as data_module

    real = data_module.load_data
    shared = data_dir.resolve()

    def load_data(name, split, data_dir_arg, device):
        if data_dir_arg is None or Path(data_dir_arg).resolve() != shared:
            return real(name, split, data_dir_arg, device)
        key = (name, split, str(device))
        if key not in _cache:
            x, y = real(name, split, data_dir_arg, device)
            if split == "test":
                x, y = x[:SMALL_TEST_SET].clone(), y[:SMALL_TEST_SET].clone()
            _cache[key] = (x, y)
        return _cache[key]

    monkeypatch.setattr(data_module, "load_data", load_data)
    return data_dir


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip where torch sees no CUDA device (`pytest -m cuda` selects them on a GPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    """A file store of the test's own; the env var the logger may set is restored afterwards."""
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()
