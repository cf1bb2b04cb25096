"""The durable store: every served request and every acknowledged record, in SQLite (WAL).

Two tables. `served` holds what a later label needs: the step (the seeds)
a request was served with, its path and its path's logits (and, for a
learner with a baseline, the base weights' logits). `records` is the log
the learner consumes, in `seq` order: one (step, path, loss) per
acknowledged feedback or client report, with the name of the client (the
token) that sent it, so one client's records can be counted, audited or
removed later. Stores written before records had a client gain the column
in place when opened; their records stay unattributed (NULL). The learner checkpoint names the
last `seq` it had applied, so recovery replays exactly the records after it.

Records are committed with `synchronous=FULL` (an acknowledged record
survives a power cut); served rows with `synchronous=NORMAL` (they survive
a killed process, and the next FULL commit makes them durable too).

Served rows are pruned once their label can no longer be learned from
(`prune_served`): rows of superseded steps, and the oldest beyond a limit.
Ids are handed out in order and a prune deletes a prefix of them, so every
id up to `pruned_through` was served here and its row is gone: a label for
it is acknowledged as stale, never mistaken for an unknown id.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS served (
    id INTEGER PRIMARY KEY, step INTEGER NOT NULL, path BLOB NOT NULL, logits BLOB NOT NULL, base BLOB);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, request_id INTEGER UNIQUE,
    step INTEGER NOT NULL, path BLOB NOT NULL, loss REAL NOT NULL, label INTEGER, time REAL NOT NULL,
    client TEXT);
"""


@dataclass
class ServedRow:
    step: int
    path: torch.Tensor  # int64 [N]
    logits: torch.Tensor  # float32 [C], the path's
    base: torch.Tensor | None = None  # float32 [C], the base weights' (a learner with a baseline)


@dataclass
class Record:
    seq: int
    step: int
    path: torch.Tensor  # int64 [N]
    loss: float  # a float32 value


def _path_bytes(path: torch.Tensor) -> bytes:
    return path.to(torch.int32).numpy().tobytes()


def _path(blob: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(blob, dtype=np.int32).astype(np.int64))


def _floats(blob: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(blob, np.float32).copy())


class Store:
    """One SQLite file; used from one thread at a time (the server's engine thread)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        if "base" not in {row[1] for row in self.db.execute("PRAGMA table_info(served)")}:  # a 0.2.0 store
            self.db.execute("ALTER TABLE served ADD COLUMN base BLOB")
        if "client" not in {row[1] for row in self.db.execute("PRAGMA table_info(records)")}:  # before clients
            self.db.execute("ALTER TABLE records ADD COLUMN client TEXT")  # O(1): old rows read as NULL
        # {(client or None, kind): records}, counted once here and kept up to date, so status never scans the log
        self._by_client: dict[tuple[str | None, str], int] = {
            (client, kind): int(n) for client, kind, n in
            self.db.execute("SELECT client, kind, COUNT(*) FROM records GROUP BY client, kind")}
        pruned = self.get_meta("served_pruned_through")
        self._pruned_through = int(pruned) if pruned is not None else -1
        last = self.db.execute("SELECT id, step FROM served ORDER BY id DESC LIMIT 1").fetchone()
        # ids never repeat, even when every row was pruned
        self._next_id = max(last[0] if last else -1, self._pruned_through) + 1
        # (the newest step served, its first id): steps only grow with ids, so older steps are a prefix
        self._newest = (last[1], int(self.db.execute("SELECT MIN(id) FROM served WHERE step = ?",
                                                    (last[1],)).fetchone()[0])) if last else (-1, self._next_id)
        classes = self.get_meta("classes")
        if classes is None:  # a store from before pruning: its rows say
            row = self.db.execute("SELECT length(logits) / 4 FROM served LIMIT 1").fetchone()
            classes = row[0] if row else None
        self._classes = None if classes is None else int(classes)

    def close(self) -> None:
        self.db.close()

    # -- metadata ------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- served requests -----------------------------------------------------

    @property
    def next_id(self) -> int:
        return self._next_id

    @property
    def pruned_through(self) -> int:
        """Every request id up to this one was served here and its row deleted since (-1: none)."""
        return self._pruned_through

    @property
    def kept(self) -> int:
        """Served rows in the table."""
        return self._next_id - 1 - self._pruned_through

    @property
    def classes(self) -> int | None:
        """Logits per served request (None before the first), remembered for labels whose row is gone."""
        return self._classes

    def add_served(self, step: int, paths: torch.Tensor, logits: torch.Tensor,
                   base: torch.Tensor | None = None) -> list[int]:
        """Store a served batch (paths [B, N], logits [B, C], base [B, C] or None); returns its request ids."""
        ids = list(range(self._next_id, self._next_id + paths.shape[0]))
        logits = logits.detach().float().cpu().numpy()
        base = None if base is None else base.detach().float().cpu().numpy()
        rows = [(i, step, _path_bytes(p), logits[r].tobytes(), None if base is None else base[r].tobytes())
                for r, (i, p) in enumerate(zip(ids, paths.cpu()))]
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO served VALUES (?, ?, ?, ?, ?)", rows)
            if self._classes is None and ids:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('classes', ?)", (str(logits.shape[1]),))
        if self._classes is None and ids:
            self._classes = int(logits.shape[1])
        if ids and step > self._newest[0]:
            self._newest = (step, ids[0])
        self._next_id += len(ids)
        return ids

    def prune_served(self, step: int, keep: int) -> int:
        """Delete the rows served before `step` (their labels can only be stale) and all but the newest `keep`.

        One transaction deletes a prefix of the ids and records where it ends; returns the rows deleted.
        """
        below = self._newest[1] if self._newest[0] >= step else self._next_id
        below = min(self._next_id, max(below, self._next_id - keep))
        if below - 1 <= self._pruned_through:
            return 0
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            deleted = self.db.execute("DELETE FROM served WHERE id < ?", (below,)).rowcount
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('served_pruned_through', ?)", (str(below - 1),))
        self._pruned_through = below - 1
        return deleted

    def served(self, ids: Sequence[int]) -> dict[int, ServedRow]:
        """The stored requests among `ids` (missing ones are absent from the answer)."""
        found: dict[int, ServedRow] = {}
        for chunk in range(0, len(ids), 500):
            part = list(ids[chunk : chunk + 500])
            marks = ",".join("?" * len(part))
            for rid, step, path, logits, base in self.db.execute(
                    f"SELECT id, step, path, logits, base FROM served WHERE id IN ({marks})", part):
                found[rid] = ServedRow(step, _path(path), _floats(logits), None if base is None else _floats(base))
        return found

    # -- records -------------------------------------------------------------

    def labelled(self, ids: Sequence[int]) -> set[int]:
        """The ids among `ids` that already have a feedback record."""
        found: set[int] = set()
        for chunk in range(0, len(ids), 500):
            part = list(ids[chunk : chunk + 500])
            marks = ",".join("?" * len(part))
            found.update(r[0] for r in self.db.execute(
                f"SELECT request_id FROM records WHERE request_id IN ({marks})", part))
        return found

    def add_records(self, kind: str, steps: Sequence[int], paths: torch.Tensor, losses: torch.Tensor,
                    request_ids: Sequence[int] | None = None, labels: Sequence[int] | None = None,
                    client: str | None = None) -> list[int]:
        """Append records durably (fsync before returning); returns their seq numbers, in order.

        client: the name of the token that sent them (None: unattributed, as in stores from before clients).
        """
        now = time.time()
        n = len(steps)
        request_ids = request_ids if request_ids is not None else [None] * n
        labels = labels if labels is not None else [None] * n
        losses = losses.detach().float().cpu().tolist()
        self.db.execute("PRAGMA synchronous=FULL")
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            seqs = []
            for rid, step, path, loss, label in zip(request_ids, steps, paths.cpu(), losses, labels):
                cur = self.db.execute(
                    "INSERT INTO records (kind, request_id, step, path, loss, label, time, client) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (kind, rid, int(step), _path_bytes(path), float(loss), label,
                                                        now, client))
                seqs.append(int(cur.lastrowid))
        key = (client, kind)  # counted only once the transaction committed
        self._by_client[key] = self._by_client.get(key, 0) + len(seqs)
        return seqs

    def records_after(self, seq: int) -> Iterator[Record]:
        """The records after `seq`, in the order they were acknowledged."""
        for s, step, path, loss in self.db.execute(
                "SELECT seq, step, path, loss FROM records WHERE seq > ? ORDER BY seq", (seq,)):
            yield Record(int(s), int(step), _path(path), float(loss))

    def last_seq(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0])

    def counts(self) -> dict[str, int]:
        """Rows per table: served requests, feedback and report records."""
        served = int(self.db.execute("SELECT COUNT(*) FROM served").fetchone()[0])
        kinds = dict(self.db.execute("SELECT kind, COUNT(*) FROM records GROUP BY kind").fetchall())
        return {"served": served, "feedback": int(kinds.get("feedback", 0)), "report": int(kinds.get("report", 0))}

    def counts_by_client(self) -> dict[str | None, dict[str, int]]:
        """{client name (None: unattributed): {"feedback": n, "report": n}} over the whole record log."""
        out: dict[str | None, dict[str, int]] = {}
        for (client, kind), n in list(self._by_client.items()):
            out.setdefault(client, {"feedback": 0, "report": 0})[kind] = n
        return out
