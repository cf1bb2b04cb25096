"""MNIST and Fashion-MNIST from IDX files, found locally or downloaded once.

Files are accepted by the MD5 of their *decompressed* content, so a locally
re-gzipped copy is as good as the mirrors' originals. Every failure a user can
cause (missing, corrupt or wrong files; no network) is a one-paragraph
``DataError`` rather than a traceback from gzip, numpy or urllib.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import sys
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path
from .common import ENV_MIRROR, ENV_OFFLINE, DataError, cache_dir, candidates, offline

SPLITS = ("train", "test")
_SPLIT_SIZE = {"train": 60_000, "test": 10_000}
_IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)
class DatasetInfo:
    """What identifies a data set: its files, their checksums, where to get them."""

    files: dict[str, tuple[str, str]]  # split -> (images, labels), decompressed names
    md5: dict[str, str]  # decompressed name -> MD5 of the decompressed content
    mirrors: tuple[str, ...]  # base URLs; the ".gz" files are fetched from them
    classes: tuple[str, ...]

    @property
    def file_names(self) -> tuple[str, ...]:
        """All four decompressed file names, labels first (small, so fail fast)."""
        return tuple(f for split in SPLITS for f in reversed(self.files[split]))


_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        files=_FILES,
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        classes=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": DatasetInfo(
        files=_FILES,
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
}


def _info(name: str) -> DatasetInfo:
    """Look a data set up, or say which names are valid."""
    try:
        return DATASETS[name]
    except KeyError:
        valid = ", ".join(DATASETS)
        raise DataError(f"unknown dataset {name!r}; choose one of: {valid}") from None


def _existing(directory: Path, fname: str) -> Path | None:
    """The file ``fname`` in ``directory``, plain or ``.gz``; plain wins (no inflate)."""
    for candidate in (directory / fname, directory / f"{fname}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _qualifies(directory: Path, info: DatasetInfo) -> bool:
    """A directory qualifies when all four files are there (content is checked on load)."""
    return all(_existing(directory, f) is not None for f in info.file_names)


def find_dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Return a directory holding all four files of ``name``, downloading if allowed.

    Search order: ``data_dir``, ``$MARKETPLACE_DATA_DIR``, ``default_cache_dir()``
    (each as ``D/name`` then ``D``); then a download into the cache unless
    ``$MARKETPLACE_OFFLINE`` is set, so that a bare ``pip install`` just works.
    """
    info = _info(name)
    searched = candidates(name, data_dir)
    for directory in searched:
        if _qualifies(directory, info):
            return directory

    needed = ", ".join(f"{f}[.gz]" for f in info.file_names)
    places = ", ".join(str(d) for d in searched)
    advice = (
        "Pass data_dir=DIR (--data-dir DIR on the command line), or set MARKETPLACE_DATA_DIR=DIR, to a directory "
        f"holding these files (as DIR/{name}/ or DIR/)"
    )
    if offline():
        raise DataError(
            f"{name} data not found. Needed files: {needed}. Searched: {places}. "
            f"Downloading is off ({ENV_OFFLINE}={os.environ[ENV_OFFLINE]}). "
            f"{advice}, or unset {ENV_OFFLINE} to download."
        )
    dest = cache_dir() / name
    print(f"{name}: not found locally; downloading into {dest}", file=sys.stderr)
    try:
        return download(name, dest)
    except DataError as exc:
        raise DataError(
            f"{name} data not found and the download failed. Needed files: {needed}. "
            f"Searched: {places}. Download error: {exc}. "
            f"{advice}, or set {ENV_MIRROR}=URL to a reachable mirror."
        ) from exc


def _read_bytes(path: Path) -> bytes:
    """The decompressed content of ``path`` (gzip detected by magic, not by name)."""
    try:
        with path.open("rb") as fh:
            is_gzip = fh.read(2) == b"\x1f\x8b"
        if is_gzip:
            with gzip.open(path, "rb") as gz:
                return gz.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"cannot read {path}: not a valid (gzip) file ({exc}); "
            "delete it and download it again"
        ) from exc


def _md5_of_file(path: Path) -> str:
    """MD5 of the decompressed content, streamed so large files cost no memory."""
    digest = hashlib.md5()
    try:
        with path.open("rb") as fh:
            is_gzip = fh.read(2) == b"\x1f\x8b"
        opener = gzip.open if is_gzip else open
        with opener(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a valid gzip file ({exc})") from exc
    return digest.hexdigest()


def _check_md5(path: Path | str, name: str, fname: str, digest: str) -> None:
    """Refuse content that is not the canonical file, naming what it is if known."""
    expected = DATASETS[name].md5[fname]
    if digest == expected:
        return
    other = [n for n, i in DATASETS.items() if n != name and i.md5.get(fname) == digest]
    hint = (
        f" (it is the {other[0]} file: point data_dir at the {name} directory)"
        if other
        else "; delete it and download it again"
    )
    raise DataError(
        f"{path}: MD5 checksum mismatch for {name} {fname} "
        f"(got {digest}, expected {expected}){hint}", fields=("data_dir",) if other else ()
    )


def _parse_idx(raw: bytes, path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Parse an IDX buffer of unsigned bytes with the expected magic and shape."""
    ndim = len(shape)
    header = 4 + 4 * ndim
    redo = "delete it and download it again"
    if len(raw) < header:
        raise DataError(f"{path}: too short for an IDX file ({len(raw)} bytes); {redo}")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(
            f"{path}: wrong IDX magic number 0x{found:08x} (expected 0x{magic:08x}); {redo}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if dims != shape or len(raw) != header + int(np.prod(shape)):
        raise DataError(
            f"{path}: wrong IDX sizes (header {dims}, {len(raw) - header} data bytes; "
            f"expected {shape}); {redo}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _load_file(
    directory: Path, name: str, fname: str, magic: int, shape: tuple[int, ...]
) -> np.ndarray:
    """Read, check structure and checksum, and parse one IDX file."""
    path = _existing(directory, fname)
    if path is None:
        raise DataError(f"{directory} has no {fname} or {fname}.gz for {name}")
    raw = _read_bytes(path)
    array = _parse_idx(raw, path, magic, shape)
    _check_md5(path, name, fname, hashlib.md5(raw).hexdigest())
    return array


def load_split(
    name: str, split: str, data_dir: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``uint8 [N, 28, 28]`` and labels ``int64 [N]`` of one split.

    Contents are checked against the canonical MD5 so that a wrong or damaged
    file fails here, loudly, rather than silently skewing an experiment.
    """
    info = _info(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    directory = find_dataset_dir(name, data_dir)
    images_name, labels_name = info.files[split]
    n = _SPLIT_SIZE[split]
    labels = _load_file(directory, name, labels_name, _LABEL_MAGIC, (n,))
    images = _load_file(directory, name, images_name, _IMAGE_MAGIC, (n, 28, 28))
    if labels.max() >= len(info.classes):
        raise DataError(f"{directory}: {name} {split} labels exceed {len(info.classes) - 1}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _fetch(url: str, dest: Path, name: str, fname: str, timeout: float) -> None:
    """Download ``url`` and install it as ``dest`` only if its content checks out."""
    with atomic_path(dest, suffix=".part") as tmp:
        with tmp.open("wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, _CHUNK)
        try:
            digest = _md5_of_file(tmp)
        except DataError:
            raise DataError("the downloaded file is not a valid gzip file") from None
        _check_md5(url, name, fname, digest)


def _mirrors(info: DatasetInfo, mirrors: list[str] | None) -> list[str]:
    """Explicit mirrors as given; otherwise ``$MARKETPLACE_MIRROR`` then the built-ins."""
    if mirrors is not None:
        return list(mirrors)
    env = os.environ.get(ENV_MIRROR, "").strip()
    return ([env] if env else []) + list(info.mirrors)


def download(
    name: str, dest: Path, mirrors: list[str] | None = None, timeout: float = 30.0
) -> Path:
    """Fetch the four ``.gz`` files of ``name`` into ``dest`` and return ``dest``.

    Each file goes to a temporary file next to its final name and is moved into
    place (atomically) only after its decompressed MD5 matches, so an
    interrupted or corrupt download never passes for a good file. Files
    already present and valid are kept; each file tries the mirrors in order.
    """
    info = _info(name)
    dest = Path(dest).expanduser()
    bases = _mirrors(info, mirrors)
    if not bases:
        raise DataError(f"no mirrors to download {name} from")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {dest} for {name} ({exc})") from exc
    for fname in info.file_names:
        have = _existing(dest, fname)
        if have is not None:
            try:
                _check_md5(have, name, fname, _md5_of_file(have))
                continue
            except DataError:
                pass  # damaged leftover: fetch it again
        failures = []
        for base in bases:
            url = base.rstrip("/") + f"/{fname}.gz"
            print(f"downloading {url}", file=sys.stderr)
            try:
                _fetch(url, dest / f"{fname}.gz", name, fname, timeout)
                break
            except (DataError, OSError, http.client.HTTPException, ValueError) as exc:
                failures.append(f"{url}: {exc}")
        else:
            raise DataError(
                f"could not download {fname}.gz for {name} from any mirror: "
                + "; ".join(failures)
            )
        if have is not None and have != dest / f"{fname}.gz":
            have.unlink(missing_ok=True)  # the damaged plain copy would shadow the .gz
    return dest
