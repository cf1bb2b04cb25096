"""What every data source shares: the error type, the search path, the offline switch, verified downloads."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..io import atomic_path

ENV_DATA_DIR = "MARKETPLACE_DATA_DIR"
ENV_OFFLINE = "MARKETPLACE_OFFLINE"
ENV_MIRROR = "MARKETPLACE_MIRROR"
CHUNK = 1 << 20


def cache_dir() -> Path:
    """`marketplace.data.default_cache_dir()`, looked up at call time (the tests replace it)."""
    from .. import data

    return data.default_cache_dir()


def offline() -> bool:
    """True when the user forbade downloads (CI, air-gapped machines)."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes"}


def candidates(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Directories to try, in order, each as ``D/name`` then ``D`` itself."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if env:
        roots.append(Path(env).expanduser())
    roots.append(cache_dir())
    out: list[Path] = []
    for root in roots:
        for directory in (root / name, root):
            if directory not in out:
                out.append(directory)
    return out


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_verified(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Fetch `url` into a temporary file beside `dest`; install it only if its MD5 is `md5`."""
    with atomic_path(dest, suffix=".part") as tmp:
        with tmp.open("wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, CHUNK)
        got = md5_of(tmp)
        if got != md5:
            raise DataError(f"{url}: MD5 checksum mismatch (got {got}, expected {md5})")
    return dest
