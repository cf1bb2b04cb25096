"""Data sets: MNIST and Fashion-MNIST (IDX files), CIFAR-10 (pickle batches), a user's `.npz`/`.pt` file.

Named data sets are found locally or downloaded once with checksums
(`idx.py`, `cifar.py`); a user's file is read and checked by `files.py`.
`load_data(name, split, data_dir, device)` gives the normalised tensors a
trainer uses; callers look it up as `data.load_data` at call time, so tests
can wrap it once for every trainer.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import cifar
from .common import ENV_DATA_DIR, ENV_MIRROR, ENV_OFFLINE, DataError
from .files import FileData, load_file
from .idx import DATASETS, SPLITS, DatasetInfo, download, find_dataset_dir
from .idx import load_split as _load_idx

# Every name `--dataset` takes: the IDX data sets of DATASETS, then CIFAR-10.
DATASET_NAMES = (*DATASETS, cifar.NAME)
CLASSES = {cifar.NAME: cifar.CLASSES}
INPUT_SHAPES = {**{name: (1, 28, 28) for name in DATASETS}, cifar.NAME: (3, 32, 32)}  # one example, as load_data gives it

MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics, used for both IDX data sets


def default_cache_dir() -> Path:
    """Where downloads go, so they survive across runs and projects.

    platformdirs is imported here, not at the top, and is optional: a bare
    machine that reads MARKETPLACE_DATA_DIR may lack it (then ~/.cache).
    """
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".cache" / "marketplace" / "data"
    return Path(platformdirs.user_cache_dir("marketplace")) / "data"


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (MNIST-like [N, 28, 28], CIFAR-10 [N, 3, 32, 32]) and labels int64 [N] of one split."""
    if name == cifar.NAME:
        return cifar.load_split(split, data_dir)
    return _load_idx(name, split, data_dir)


def load_data(name: str, split: str, data_dir: str | None, device: torch.device):
    """Images as normalised float32 [N, C, H, W] and labels int64 [N], on the device."""
    images, labels = load_split(name, split, data_dir)
    if name == cifar.NAME:
        return cifar.normalize(images, device), labels.to(device)
    x = (images.to(device=device, dtype=torch.float32) / 255.0 - MEAN) / STD
    return x.unsqueeze(1), labels.to(device)


def num_classes(name: str) -> int:
    return len(CLASSES[name]) if name in CLASSES else len(DATASETS[name].classes)


def input_shape(name: str) -> tuple[int, ...]:
    """The shape of one example of a named data set, known without reading it."""
    return INPUT_SHAPES[name]


__all__ = [
    "CLASSES", "DATASETS", "DATASET_NAMES", "DataError", "DatasetInfo", "ENV_DATA_DIR", "ENV_MIRROR", "ENV_OFFLINE",
    "FileData", "INPUT_SHAPES", "MEAN", "SPLITS", "STD", "default_cache_dir", "download", "find_dataset_dir", "load_data",
    "input_shape", "load_file", "load_split", "num_classes",
]
