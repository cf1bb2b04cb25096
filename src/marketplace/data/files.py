"""A user's data set from one file: `.npz` (numpy) or `.pt` (torch), four arrays.

    x_train [N, ...], y_train [N], x_test [M, ...], y_test [M]

x: float (used as given), uint8 (scaled to [0, 1], then standardised with
the training set's mean and std), or int32/int64 (token ids, kept as int64
for an `nn.Embedding`). y: integers in [0, classes), classes = the largest
training label + 1 (or a scalar `classes` entry). Files are read without
running code: `np.load(allow_pickle=False)`, `torch.load(weights_only=True)`.
Every problem is a `DataError` that names the key.
"""

from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .common import DataError

KEYS = ("x_train", "y_train", "x_test", "y_test")
SUFFIXES = (".npz", ".pt", ".pth")


@dataclass(frozen=True, eq=False)
class FileData:
    """The four tensors of a data file, checked; x as stored (see `inputs`)."""

    path: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def inputs(self, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """x (float32 or int64 token ids) and y (int64) of one split, on the device."""
        x = self.x_train if split == "train" else self.x_test
        y = self.y_train if split == "train" else self.y_test
        if x.dtype == torch.uint8:
            train = self.x_train.float() / 255.0
            mean, std = float(train.mean()), float(train.std()) or 1.0
            x = (x.to(device=device, dtype=torch.float32) / 255.0 - mean) / std
        elif x.is_floating_point():
            x = x.to(device=device, dtype=torch.float32)
        else:
            x = x.to(device=device, dtype=torch.int64)
        return x, y.to(device=device, dtype=torch.int64)


def _read(path: Path) -> dict:
    if path.suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise DataError(f"{path} is not a readable .npz file (not a zip archive)")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return {k: arrays[k] for k in arrays.files}
        except ValueError as e:  # object arrays need pickle: refused
            raise DataError(f"{path}: {e} (store plain numeric arrays)") from e
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"{path} is not a readable .npz file ({e})") from e
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt file or a pickled object the safe loader refuses
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path} is not a readable .pt file of tensors ({first})") from e
    if not isinstance(loaded, dict):
        raise DataError(f"{path} holds a {type(loaded).__name__}; expected a dict with keys {', '.join(KEYS)}")
    return loaded


def _tensor(value, key: str, path: Path) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise DataError(f"{path}: {key} has dtype {value.dtype}; expected numbers")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value
    raise DataError(f"{path}: {key} is a {type(value).__name__}, not an array")


def _check(path: Path, t: dict[str, torch.Tensor], classes: int | None) -> int:
    for key in ("x_train", "x_test"):
        x = t[key]
        if x.dim() < 2 or len(x) == 0:
            raise DataError(f"{path}: {key} must be [N, ...] with N >= 1 and one dimension per example, "
                            f"got shape {list(x.shape)}")
        if x.dtype == torch.bool or x.is_complex():
            raise DataError(f"{path}: {key} has dtype {x.dtype}; expected float, uint8 or integer token ids")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise DataError(f"{path}: {key} holds NaN or infinite values")
    if t["x_test"].shape[1:] != t["x_train"].shape[1:]:
        raise DataError(f"{path}: x_test examples have shape {list(t['x_test'].shape[1:])} but x_train's "
                        f"have {list(t['x_train'].shape[1:])}")
    for key, xkey in (("y_train", "x_train"), ("y_test", "x_test")):
        y = t[key]
        if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
            raise DataError(f"{path}: {key} has dtype {y.dtype}; expected integer class labels")
        if y.shape != (len(t[xkey]),):
            raise DataError(f"{path}: {key} must be [{len(t[xkey])}] (one label per row of {xkey}), "
                            f"got shape {list(y.shape)}")
        if int(y.min()) < 0:
            raise DataError(f"{path}: {key} has a negative label ({int(y.min())}); labels are 0..classes-1")
    n = classes if classes is not None else int(t["y_train"].max()) + 1
    for key in ("y_train", "y_test"):
        if int(t[key].max()) >= n:
            raise DataError(f"{path}: {key} has label {int(t[key].max())}, outside 0..{n - 1} "
                            f"({'the classes entry' if classes is not None else 'the labels of y_train'})")
    return n


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> FileData:
    p = Path(path)
    raw = _read(p)
    missing = [k for k in KEYS if k not in raw]
    if missing:
        have = ", ".join(map(str, raw)) or "nothing"
        raise DataError(f"{p} lacks {', '.join(missing)} (it has {have}); a data file holds {', '.join(KEYS)}")
    tensors = {k: _tensor(raw[k], k, p) for k in KEYS}
    classes = None
    if "classes" in raw:
        c = _tensor(raw["classes"], "classes", p) if not isinstance(raw["classes"], int) else torch.tensor(raw["classes"])
        if c.numel() != 1 or c.is_floating_point() or int(c) < 1:
            raise DataError(f"{p}: classes must be one integer >= 1")
        classes = int(c)
    n = _check(p, tensors, classes)
    return FileData(str(p), *(tensors[k] for k in KEYS), n)


def load_file(path: str | os.PathLike) -> FileData:
    """Read and check a data file (cached while it is unchanged)."""
    p = Path(path).expanduser()
    if p.suffix not in SUFFIXES:
        raise DataError(f"{p}: a data file is .npz or .pt, not {p.suffix or 'a file without suffix'}")
    if not p.is_file():
        raise DataError(f"no data file at {p}")
    return _load(str(p.resolve()), p.stat().st_mtime)
