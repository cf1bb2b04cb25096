"""Tests of marketplace.data: loading, search order, downloads, corrupt files.

No test reaches beyond 127.0.0.1: downloads go to a local http.server, and a
guard on sockets fails any other connection.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import http.server
import shutil
import socket
import threading
import urllib.request
from pathlib import Path

import pytest
import torch

from marketplace import data
from marketplace.data import DATASETS, DataError, download, find_dataset_dir, load_split
from marketplace.errors import MarketplaceError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
NAMES = DATASETS["mnist"].file_names


def shared_dir(name: str) -> Path:
    """The development copy of ``name``, or skip: these machines cannot download."""
    directory = SHARED / name
    if not all((directory / f"{f}.gz").is_file() for f in NAMES):
        pytest.skip(f"{directory} with the four {name} .gz files is absent")
    return directory


def placeholders(directory: Path) -> Path:
    """Empty stand-ins: enough for the search, which checks only that files exist."""
    directory.mkdir(parents=True, exist_ok=True)
    for f in NAMES:
        (directory / f"{f}.gz").touch()
    return directory


def write_gz(path: Path, raw: bytes) -> None:
    path.write_bytes(gzip.compress(raw, compresslevel=1))


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real cache, no user settings, no proxies; only loopback connections."""
    for var in ("MARKETPLACE_DATA_DIR", "MARKETPLACE_OFFLINE", "MARKETPLACE_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setattr(data, "default_cache_dir", lambda: cache)
    try:  # data imports platformdirs lazily and optionally (the GPU machine lacks it)
        import platformdirs
    except ImportError:
        pass
    else:
        monkeypatch.setattr(platformdirs, "user_cache_dir", lambda *a, **k: str(tmp_path / "pd"))

    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] != "127.0.0.1":
            raise AssertionError(f"test tried to connect to {address}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host != "127.0.0.1":
            raise AssertionError(f"test tried to resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return cache


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """An http.server on 127.0.0.1 serving tmp_path/www; yields (root, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def publish(root: Path, sub: str, corrupt: str | None = None) -> Path:
    """Copy the shared MNIST .gz files under root/sub; optionally damage one's content."""
    src = shared_dir("mnist")
    out = root / sub
    out.mkdir(parents=True)
    for f in NAMES:
        if f == corrupt:
            raw = bytearray(gzip.decompress((src / f"{f}.gz").read_bytes()))
            raw[-1] ^= 0xFF  # valid gzip, valid IDX, wrong content
            write_gz(out / f"{f}.gz", bytes(raw))
        else:
            shutil.copyfile(src / f"{f}.gz", out / f"{f}.gz")
    return out


# --- loading the real files -------------------------------------------------


@pytest.mark.parametrize(
    ("split", "n", "first"),
    [("train", 60_000, [5, 0, 4, 1, 9]), ("test", 10_000, [7, 2, 1, 0, 4])],
)
def test_load_mnist(split, n, first):
    shared_dir("mnist")
    images, labels = load_split("mnist", split, SHARED)
    assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert labels.min() == 0 and labels.max() == 9
    assert labels[:5].tolist() == first
    assert 0 < images.float().mean() < 255


@pytest.mark.parametrize(("split", "n", "first"), [("train", 60_000, 9), ("test", 10_000, 9)])
def test_load_fashion_mnist(split, n, first):
    shared_dir("fashion-mnist")
    images, labels = load_split("fashion-mnist", split, SHARED / "fashion-mnist")
    assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert labels.bincount().tolist() == [n // 10] * 10  # balanced, 10 classes
    assert labels[0].item() == first
    assert DATASETS["fashion-mnist"].classes[3] == "Dress"
    assert (labels == 3).any()


def test_plain_idx_files_are_accepted(tmp_path):
    src = shared_dir("mnist")
    d = placeholders(tmp_path / "plain")
    for f in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (d / f"{f}.gz").unlink()
        (d / f).write_bytes(gzip.decompress((src / f"{f}.gz").read_bytes()))
    images, labels = load_split("mnist", "test", d)
    assert images.shape == (10_000, 28, 28) and labels[0].item() == 7


def test_unknown_names():
    with pytest.raises(DataError, match="mnist, fashion-mnist"):
        find_dataset_dir("cifar")
    with pytest.raises(DataError, match="train, test"):
        load_split("mnist", "valid")
    assert issubclass(DataError, MarketplaceError)


# --- where the files are found ----------------------------------------------


def test_search_order(tmp_path, monkeypatch, isolated):
    arg = placeholders(tmp_path / "arg" / "mnist")
    env = placeholders(tmp_path / "env" / "mnist")
    cache = placeholders(isolated / "mnist")
    monkeypatch.setenv("MARKETPLACE_OFFLINE", "1")
    monkeypatch.setenv("MARKETPLACE_DATA_DIR", str(tmp_path / "env"))
    assert find_dataset_dir("mnist", tmp_path / "arg") == arg
    assert find_dataset_dir("mnist", str(tmp_path / "nothing-here")) == env
    assert find_dataset_dir("mnist") == env
    monkeypatch.delenv("MARKETPLACE_DATA_DIR")
    assert find_dataset_dir("mnist") == cache


def test_both_layouts(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKETPLACE_OFFLINE", "1")
    nested = placeholders(tmp_path / "root" / "mnist")
    assert find_dataset_dir("mnist", tmp_path / "root") == nested  # D/name/
    assert find_dataset_dir("mnist", nested) == nested  # D/ itself
    flat = placeholders(tmp_path / "flat")
    assert find_dataset_dir("fashion-mnist", flat) == flat
    placeholders(flat / "fashion-mnist")
    assert find_dataset_dir("fashion-mnist", flat) == flat / "fashion-mnist"  # D/name first


def test_wrong_dataset_directory_is_named(monkeypatch):
    shared_dir("mnist")
    with pytest.raises(DataError, match="it is the mnist file"):
        load_split("fashion-mnist", "test", SHARED / "mnist")


def test_offline_and_missing(tmp_path, monkeypatch, isolated):
    def no_network(*args, **kwargs):
        raise AssertionError("offline: no connection may be attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("MARKETPLACE_OFFLINE", "yes")
    monkeypatch.setenv("MARKETPLACE_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(DataError) as err:
        load_split("mnist", "train", tmp_path / "arg")
    msg = str(err.value)
    for f in NAMES:
        assert f in msg
    for place in (tmp_path / "arg" / "mnist", tmp_path / "arg", tmp_path / "env", isolated):
        assert str(place) in msg
    for advice in ("--data-dir", "MARKETPLACE_DATA_DIR", "unset MARKETPLACE_OFFLINE"):
        assert advice in msg
    assert not (isolated / "mnist").exists()


# --- downloading from a local mirror ----------------------------------------


def test_download_from_mirror(server, tmp_path):
    root, url = server
    publish(root, "mnist")
    dest = tmp_path / "dest"
    assert download("mnist", dest, mirrors=[f"{url}/mnist/"], timeout=10) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{f}.gz" for f in NAMES)
    images, labels = load_split("mnist", "test", dest)
    assert images.shape == (10_000, 28, 28) and labels[:2].tolist() == [7, 2]


def test_find_downloads_via_env_mirror(server, monkeypatch, isolated):
    root, url = server
    publish(root, "mnist")
    monkeypatch.setenv("MARKETPLACE_MIRROR", f"{url}/mnist")  # no trailing slash
    assert find_dataset_dir("mnist") == isolated / "mnist"
    labels = load_split("mnist", "train")[1]
    assert labels[:3].tolist() == [5, 0, 4]


def test_download_rejects_bad_checksum(server, tmp_path):
    root, url = server
    bad = "train-labels-idx1-ubyte"
    publish(root, "bad", corrupt=bad)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="checksum") as err:
        download("mnist", dest, mirrors=[f"{url}/bad/"], timeout=10)
    assert bad in str(err.value)
    assert not (dest / f"{bad}.gz").exists()
    assert not list(dest.glob("*.part")) and not list(dest.glob(".*"))


def test_download_tries_next_mirror(server, tmp_path):
    root, url = server
    publish(root, "bad", corrupt="t10k-labels-idx1-ubyte")
    publish(root, "good")
    mirrors = [f"{url}/missing/", f"{url}/bad/", f"{url}/good/"]
    dest = download("mnist", tmp_path / "dest", mirrors=mirrors, timeout=10)
    assert load_split("mnist", "test", dest)[1][0].item() == 7


def test_failed_download_explains(server, monkeypatch, isolated):
    _, url = server
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=()))
    monkeypatch.setenv("MARKETPLACE_MIRROR", f"{url}/missing/")
    with pytest.raises(DataError) as err:
        find_dataset_dir("mnist")
    msg = str(err.value)
    assert "404" in msg and str(isolated) in msg and "--data-dir" in msg
    assert not list((isolated / "mnist").iterdir())


# --- damaged local files ----------------------------------------------------


def damaged(tmp_path: Path, write) -> Path:
    """A directory whose t10k labels file was written by ``write(path, good_raw)``."""
    src = shared_dir("mnist")
    d = placeholders(tmp_path / "damaged")
    f = "t10k-labels-idx1-ubyte"
    write(d / f"{f}.gz", gzip.decompress((src / f"{f}.gz").read_bytes()))
    return d


def test_truncated_gzip(tmp_path):
    d = damaged(tmp_path, lambda p, raw: p.write_bytes(gzip.compress(raw)[:-20]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz.*delete it"):
        load_split("mnist", "test", d)


def test_wrong_magic(tmp_path):
    d = damaged(tmp_path, lambda p, raw: write_gz(p, b"\x00\x00\x08\x03" + raw[4:]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: wrong IDX magic"):
        load_split("mnist", "test", d)


def test_wrong_size(tmp_path):
    d = damaged(tmp_path, lambda p, raw: write_gz(p, raw[:-1]))
    with pytest.raises(DataError, match="wrong IDX sizes"):
        load_split("mnist", "test", d)


def test_not_gzip_at_all(tmp_path):
    d = damaged(tmp_path, lambda p, raw: p.write_bytes(b"\x1f\x8bnot really gzip"))
    with pytest.raises(DataError, match="not a valid"):
        load_split("mnist", "test", d)
