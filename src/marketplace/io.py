"""Atomic file writes: a reader, a crash or a timeout never sees half a file.

Everything the package writes (checkpoints, results tables, downloads) goes
through `atomic_path`: the content is written to a temporary file beside the
destination, flushed to disk and renamed over it. If writing fails, the old
file is left as it was and the temporary file is removed.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on a clean exit it replaces `path`, on an error it is deleted.

    Write the content to the yielded path by any means (a library's
    `save(..., tmp)`, a download); raise inside the block to keep the old file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result is an ordinary file
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, content: str | bytes) -> Path:
    """Write `content` (text as UTF-8, or bytes) to `path` atomically; returns the path."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> Path:
    """`value` as JSON (and a final newline) to `path`, atomically."""
    return write_atomic(path, json.dumps(value, indent=indent) + "\n")

