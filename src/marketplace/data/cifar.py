"""CIFAR-10 from its Python-pickle batches, parsed without unpickling arbitrary objects.

The batches (`data_batch_1..5`, `test_batch`) are read from
`cifar-10-batches-py/` or straight from `cifar-10-python.tar.gz` (never
extracted to disk), searched like MNIST (`--data-dir`, `$MARKETPLACE_DATA_DIR`,
the cache, each as `D/cifar10/` or `D/`), else downloaded into the cache
unless `$MARKETPLACE_OFFLINE` is set. The archive and every batch are
checked against their MD5. A batch is a pickle; `SafeUnpickler` resolves only
the few numpy names that rebuild an array, so a tampered file fails with a
`DataError` instead of running code.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch

from .common import DataError, cache_dir, candidates, download_verified, md5_of, offline

NAME = "cifar10"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE, ARCHIVE_MD5 = "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)  # per channel, of the training set
STD = (0.2470, 0.2435, 0.2616)

# What rebuilding a numpy array from a pickle needs, and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol 2 writes a bytes object from Python 3
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array reconstruction."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def parse_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images uint8 [N, 3, 32, 32] and labels int64 [N]."""
    try:
        batch = SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # any malformed pickle: one line, never a traceback
        raise DataError(f"{where} is not a CIFAR-10 batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise DataError(f"{where} is not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: 'data' must be uint8 [N, 3072], got {got}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        raise DataError(f"{where}: 'labels' must be a list of {len(data)} integers")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: 'labels' must be integers ({e})") from e
    if labels.ndim != 1 or (len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES))):
        raise DataError(f"{where}: labels must lie in 0..{len(CLASSES) - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _check(raw: bytes, name: str, where: str) -> None:
    digest = hashlib.md5(raw).hexdigest()
    if digest != BATCH_MD5[name]:
        raise DataError(f"{where}: MD5 checksum mismatch for CIFAR-10 {name} (got {digest}, expected "
                        f"{BATCH_MD5[name]}); delete it and download it again")


def _locate(data_dir: str | os.PathLike | None) -> Path:
    """A batch folder or an archive: the first found, else a verified download into the cache."""
    searched = candidates(NAME, data_dir)
    for directory in searched:
        for place in (directory / FOLDER, directory):
            if all((place / b).is_file() for b in BATCH_MD5):
                return place
        if (directory / ARCHIVE).is_file():
            return directory / ARCHIVE
    if offline():
        raise DataError(f"CIFAR-10 not found: searched {', '.join(map(str, searched))} for {FOLDER}/ or "
                        f"{ARCHIVE}; downloading is off (MARKETPLACE_OFFLINE); pass data_dir DIR or "
                        "unset MARKETPLACE_OFFLINE to download", fields=("data_dir",))
    dest = cache_dir() / NAME / ARCHIVE
    print(f"cifar10: not found locally; downloading {URL} into {dest.parent}", file=sys.stderr)
    try:
        return download_verified(URL, dest, ARCHIVE_MD5)
    except (OSError, ValueError) as e:
        raise DataError(f"could not download CIFAR-10 from {URL}: {e}") from e


def _read(place: Path, name: str) -> tuple[bytes, str]:
    if place.is_dir():
        path = place / name
        return path.read_bytes(), str(path)
    where = f"{place}:{FOLDER}/{name}"
    try:
        with tarfile.open(place, "r:gz") as tar:
            member = tar.extractfile(f"{FOLDER}/{name}")
            if member is None:
                raise KeyError(name)
            return member.read(), where
    except (tarfile.TarError, KeyError, OSError, EOFError) as e:
        raise DataError(f"{place} is not a readable CIFAR-10 archive ({type(e).__name__}: {e}); "
                        "delete it and download it again") from e


def load_split(split: str, data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [N, 3, 32, 32] and labels int64 [N] (train: 50,000, test: 10,000)."""
    if split not in BATCHES:
        raise DataError(f"unknown split {split!r}; choose one of: {', '.join(BATCHES)}")
    place = _locate(data_dir)
    if place.is_file() and md5_of(place) != ARCHIVE_MD5:
        raise DataError(f"{place}: MD5 checksum mismatch for {ARCHIVE}; delete it and download it again")
    images, labels = [], []
    for name in BATCHES[split]:
        raw, where = _read(place, name)
        _check(raw, name, where)
        x, y = parse_batch(raw, where)
        images.append(x)
        labels.append(y)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def normalize(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [N, 3, 32, 32] -> float32, standardised per channel."""
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return (images.to(device=device, dtype=torch.float32) / 255.0 - mean) / std
