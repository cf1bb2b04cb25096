"""Atomic writes (marketplace.io): a failure mid-write leaves the old file and no temporary file."""

import json
import os

import pytest

from marketplace import io


def test_write_atomic_writes_text_bytes_and_json(tmp_path):
    assert io.write_atomic(tmp_path / "a" / "t.md", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    assert io.write_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert json.loads(io.write_json(tmp_path / "c.json", {"x": [1, 2]}).read_text()) == {"x": [1, 2]}
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


def test_a_failure_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    io.write_atomic(path, "old")
    with pytest.raises(OSError, match="disk full"):
        with io.atomic_path(path) as tmp:
            tmp.write_text("half of the n")
            raise OSError("disk full")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]


def test_a_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "r.md"
    io.write_atomic(path, "old")

    def failing_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        io.write_atomic(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["r.md"]


def test_a_failed_first_write_creates_nothing(tmp_path):
    with pytest.raises(ValueError):
        with io.atomic_path(tmp_path / "new.png"):
            raise ValueError("the figure failed")
    assert os.listdir(tmp_path) == []


def test_atomic_writes_are_implemented_once():
    """Every os.replace in the package is the one in marketplace/io.py."""
    from pathlib import Path

    package = Path(io.__file__).parent
    users = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py") if "os.replace(" in p.read_text())
    assert users == ["io.py"]
