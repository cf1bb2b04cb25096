"""The learner behind the server: serve, record, update, checkpoint, recover.

`Engine` owns a `ContinualLearner` (the single source of the update rule)
and a `Store`. Every method runs on the server's one engine thread, so
forwards, records and updates happen in one order: the order of `seq` in the
store. That makes recovery exact: load the learner checkpoint, which names
the last record it had applied, and feed the later records to the learner
again in `seq` order; the same records in the same order give the same
updates, bit for bit, and nothing is counted twice.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save as safetensors_bytes

from ..continual import ContinualLearner
from ..errors import MarketplaceError, RequestError
from ..market import Market
from ..optim import V2
from ..training import CheckpointError, load_checkpoint, save_checkpoint
from .answer import Answer
from .config import ServerConfig
from .store import Record, Store

STORE_FILE, LEARNER_FILE = "store.sqlite3", "learner.safetensors"


def check_paths(paths, counts: Sequence[int], n: int) -> torch.Tensor:
    """The `n` paths of a report as int64 [n, N]: one vendor per spec, each below its spec's count.

    paths: a tensor or lists (straight from a request body, possibly ragged). The one place paths are checked.
    """
    depth = len(counts)
    rows = paths.tolist() if isinstance(paths, torch.Tensor) else [list(p) for p in paths]
    if len(rows) != n:
        raise RequestError(f"{n} records need {n} paths, got {len(rows)}")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != depth:
            got = len(row) if isinstance(row, list) else 1
            raise RequestError(f"record {i}: a path needs {depth} vendors (one per spec), got {got}")
    tensor = torch.tensor(rows, dtype=torch.int64).reshape(n, depth)
    bad = ((tensor < 0) | (tensor >= torch.tensor(list(counts), dtype=torch.int64))).any(dim=1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise RequestError(f"record {i}: path {rows[i]} names vendors outside the market {list(counts)}")
    return tensor


class Engine:
    """A market that learns from the requests it serves, durably.

    market: the served market (its base weights are updated in place).
    source: what identifies the starting weights (a checkpoint's hash): a
    store made for other weights is refused. model: the model record a
    client rebuilds the specs from (`load.specs_of`), or None for a user's
    market whose clients bring their own specs. pixels: (mean, std) that
    uint8 inputs are normalised with, as in training (None: taken as they are).
    """

    def __init__(self, market: Market, config: ServerConfig, source: str, input_shape: tuple[int, ...],
                 model: dict[str, Any] | None = None, pixels: tuple | None = None):
        config.validate()
        self.config, self.market, self.source = config, market, source
        self.input_shape, self.model, self.pixels = tuple(input_shape), model, pixels
        # A non-finite loss skips its update rather than raising: a stored record must never stop recovery.
        optimizer = V2(market, lr=config.lr, probe_scale=config.probe_scale, per_spec=config.unit == "spec",
                       decay=0.0, seed=config.seed, on_nonfinite="skip", attribution=config.attribution)
        self.learner = ContinualLearner(optimizer, records=config.records, path_seed=config.seed,
                                        baseline=config.baseline, balanced=config.balanced)
        self.lock = threading.RLock()
        self.started = time.time()
        self.applied_seq, self.last_served_id, self.replayed = 0, -1, 0
        self._weights: tuple[int, bytes] | None = None
        self._charged_step, self._charged = -1, {}  # records per client in the current step
        self.store: Store | None = None
        if config.learning:
            self._open_store()

    @property
    def step(self) -> int:
        return self.learner.step

    # -- recovery ------------------------------------------------------------

    def _open_store(self) -> None:
        root = Path(self.config.store)
        root.mkdir(parents=True, exist_ok=True)
        self.store = Store(root / STORE_FILE)
        known = self.store.get_meta("source")
        if known is None:
            self.store.set_meta("source", self.source)
        elif known != self.source:
            raise MarketplaceError(f"the store {root} was made for other starting weights ({known[:12]}, not "
                                   f"{self.source[:12]}): serve the same checkpoint or pick another store directory")
        baseline, stored = "on" if self.config.baseline else "off", self.store.get_meta("baseline")
        if stored is None:  # its records' losses are relative to the base weights or not: that cannot change
            self.store.set_meta("baseline", baseline)
        elif stored != baseline:
            raise MarketplaceError(f"the store {root} was made with the baseline {stored}, not {baseline}: "
                                   "start with the same baseline setting or pick another store directory")
        stored = self.store.get_meta("attribution")
        if stored is None:  # a new store, or one made before the option (those learned with z-scores)
            stored = "zscore" if self.store.last_seq() else self.config.attribution
            self.store.set_meta("attribution", stored)
        if stored != self.config.attribution:
            raise MarketplaceError(f"the store {root} learns with the {stored} attribution, not "
                                   f"{self.config.attribution}: start with attribution {stored} or pick another "
                                   "store directory")
        if (root / LEARNER_FILE).exists():
            self._load(root / LEARNER_FILE)
        self._replay()

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        try:
            self.market.load_state_dict(ckpt.model)
            self.learner.load_state_dict(ckpt.optimizer)
        except (RuntimeError, KeyError, MarketplaceError) as e:
            raise CheckpointError(f"{path} does not fit this market: {str(e).splitlines()[0]}") from e
        self.applied_seq = int(ckpt.meta["applied_seq"])
        self.last_served_id = int(ckpt.meta["last_served_id"])

    def _replay(self) -> None:
        """Feed the records acknowledged after the checkpoint to the learner, in the order they came."""
        self.learner.stats["served"] += self.store.next_id - 1 - self.last_served_id  # ids are consecutive
        self.last_served_id = self.store.next_id - 1
        records = list(self.store.records_after(self.applied_seq))
        self._apply(records)
        self.replayed = len(records)
        self._prune()

    def _prune(self) -> None:
        """Forget served rows whose labels can no longer be learned from (superseded, or beyond --keep-served)."""
        self.store.prune_served(self.step, self.config.keep_served)

    def _apply(self, records: list[Record]) -> tuple[int, int]:
        """Hand records to the learner in order, one call per run of equal steps; returns (recorded, stale)."""
        recorded, stale_before, start = 0, self.learner.stats["stale"], 0
        for end in range(1, len(records) + 1):
            if end == len(records) or records[end].step != records[start].step:
                run = records[start:end]
                losses = torch.tensor([r.loss for r in run], dtype=torch.float32)
                recorded += self.learner.record(losses, torch.stack([r.path for r in run]), run[0].step)
                self.applied_seq, start = run[-1].seq, end
        return recorded, self.learner.stats["stale"] - stale_before

    # -- requests ------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Answer:
        """One batched forward: random paths when learning (stored for their labels), else the base weights.

        With a baseline the answer is the base weights' and the paths run beside them, for learning only.
        """
        with self.lock:
            x = x.to(self.market.device)
            if not self.config.learning:
                paths = torch.zeros(x.shape[0], self.market.depth, dtype=torch.int64)
                return Answer(None, paths, self.step, logits=self.market(x))
            out = self.learner.infer(x)
            base = out.logits if self.config.baseline else None
            ids = self.store.add_served(out.step, out.paths, out.probe_logits, base)
            self.last_served_id = ids[-1] if ids else self.last_served_id
            if self.store.kept > self.config.keep_served * 9 // 8:  # in steps of 1/8 of the limit
                self._prune()
            return Answer(ids, out.paths, out.step, logits=out.logits)

    def _charge(self, client: str, n: int) -> None:
        """Count `n` records against `client`'s share of this step; a 429 past `config.client_records`.

        The counts start again at every step and are not stored: a restart forgets them.
        """
        cap = self.config.client_records
        if cap is None:
            return
        if self._charged_step != self.step:
            self._charged_step, self._charged = self.step, {}
        used = self._charged.get(client, 0)
        if used + n > cap:
            raise RequestError(f"client {client!r} has sent {used} records in step {self.step}; at most {cap} "
                               "per client and step", 429)
        self._charged[client] = used + n

    def feedback(self, ids: list[int], labels: list[int], client: str = "default") -> dict[str, int]:
        """Labels for served requests: losses from their stored logits, stored, then learned from."""
        with self.lock:
            self._require_learning()
            if len(set(ids)) != len(ids):
                raise RequestError("feedback repeats a request id", 409)
            rows = self.store.served(ids)
            unknown = [i for i in ids if i not in rows and not 0 <= i <= self.store.pruned_through]
            if unknown:
                raise RequestError(f"{len(unknown)} unknown request ids (never served here): {unknown[:5]}", 404)
            done = sorted(self.store.labelled(ids))
            if done:
                raise RequestError(f"{len(done)} requests already have feedback: {done[:5]}", 409)
            classes = self.store.classes
            bad = [y for y in labels if not 0 <= y < classes]
            if bad:
                raise RequestError(f"labels must lie in [0, {classes}), got {bad[:5]}")
            self._charge(client, len(ids))
            live = [k for k, i in enumerate(ids) if i in rows]
            # a row pruned since: stored with step -1 and path 0 (its loss unused), so it counts stale, live or replayed
            steps, losses = [-1] * len(ids), torch.zeros(len(ids))
            paths = torch.zeros(len(ids), self.market.depth, dtype=torch.int64)
            if live:
                kept = [rows[ids[k]] for k in live]
                base = torch.stack([r.base for r in kept]) if self.config.baseline else None
                losses[live] = self.learner.losses(torch.stack([r.logits for r in kept]),
                                                   torch.tensor([labels[k] for k in live], dtype=torch.int64), base)
                paths[live] = torch.stack([r.path for r in kept])
                for k, r in zip(live, kept):
                    steps[k] = r.step
            seqs = self.store.add_records("feedback", steps, paths, losses, ids, labels, client=client)
            return self._learn(seqs, steps, paths, losses)

    def report(self, steps: list[int], paths, losses: torch.Tensor, client: str = "default") -> dict[str, int]:
        """(step, path, loss) computed by clients on their own data: stored, then learned from.

        paths: [n, N] vendor indices (a tensor or lists), checked here, once.
        """
        with self.lock:
            self._require_learning()
            paths = check_paths(paths, self.market.vendor_counts, len(steps))
            losses = torch.as_tensor(losses)
            if not bool(torch.isfinite(losses).all()):
                raise RequestError("losses must be finite numbers")
            ahead = [s for s in steps if s > self.step or s < 0]
            if ahead:
                raise RequestError(f"step {ahead[0]} was never served (the current step is {self.step})")
            if all(s < self.step for s in steps):  # nothing is stored, so nothing is counted
                raise RequestError(f"step {max(steps)} is superseded (the current step is {self.step}): "
                                   "fetch /v1/market and compute the losses again", 409)
            self._charge(client, len(steps))
            losses = losses.float()  # what is stored is what is learned from, live or replayed
            seqs = self.store.add_records("report", steps, paths, losses, client=client)
            return self._learn(seqs, steps, paths, losses)

    def _learn(self, seqs: list[int], steps: list[int], paths: torch.Tensor, losses: torch.Tensor) -> dict[str, int]:
        """Stored records -> the learner (exactly as replay will do it); checkpoint every N updates."""
        before = self.learner.stats["updates"]
        records = [Record(q, s, p, v) for q, s, p, v in zip(seqs, steps, paths, losses.tolist())]
        recorded, stale = self._apply(records)
        updates, every = self.learner.stats["updates"] - before, self.config.checkpoint_every
        if updates and self.learner.stats["updates"] // every != before // every:
            self.checkpoint()
        if updates:
            self._prune()
        return {"stored": len(seqs), "recorded": recorded, "stale": stale, "updates": updates, "step": self.step}

    def _require_learning(self) -> None:
        if not self.config.learning:
            raise RequestError("learning is off on this server: it takes no feedback", 409)

    # -- state ---------------------------------------------------------------

    def checkpoint(self) -> Path | None:
        """Write the learner (weights, optimizer, step, path generator, counters) atomically."""
        with self.lock:
            if self.store is None:
                return None
            path = Path(self.config.store) / LEARNER_FILE
            meta = {"applied_seq": self.applied_seq, "last_served_id": self.last_served_id, "source": self.source,
                    "config": {k: v for k, v in asdict(self.config).items() if k != "token"}}
            save_checkpoint(path, self.market.state_dict(), self.learner.state_dict(), meta)
            return path

    def close(self) -> None:
        with self.lock:
            if self.store is not None:
                self.checkpoint()
                self.store.close()
                self.store = None

    def version(self) -> str:
        """Names the base weights and seeds of the current step: the source and the step."""
        return f"{self.source[:16]}-{self.step}"

    def market_info(self) -> dict[str, Any]:
        """What a client needs to build any vendor of the current step itself."""
        with self.lock:
            vendors = self.learner.vendors
            return {"step": self.step, "version": self.version(), "vendors": list(self.market.vendor_counts),
                    "seeds": [[int(s) for s in seeds.tolist()] for seeds in vendors.seeds],
                    "sigma": list(vendors.sigma), "sampling_seed": int(vendors.sampling_seed),
                    "input_shape": list(self.input_shape), "model": self.model, "records": self.config.records,
                    "learning": self.config.learning, "baseline": self.config.baseline,
                    **({"rank": self.market.rank} if self.market.rank else {})}

    def weights(self) -> tuple[str, bytes]:
        """(version, the base weights as safetensors bytes), made once per step."""
        with self.lock:
            if self._weights is None or self._weights[0] != self.step:
                state = {k: v.detach().cpu().contiguous() for k, v in self.market.state_dict().items()}
                self._weights = (self.step, safetensors_bytes(state, metadata={"version": self.version()}))
            return self.version(), self._weights[1]

    def status(self) -> dict[str, Any]:
        stats = dict(self.learner.stats)
        return {"step": self.step, "version": self.version(), "learning": self.config.learning,
                "baseline": self.config.baseline,
                "records_waiting": self.learner.buffered, "records_per_update": self.config.records,
                **stats, "replayed": self.replayed, "uptime_s": round(time.time() - self.started, 3),
                # every stored record is counted once by the learner, as recorded or as stale
                "stored_records": self.store.last_seq() if self.store is not None else 0}

    def records_by_client(self) -> dict[str, Any]:
        """Stored records per client name, and those of stores from before clients (for a token holder only)."""
        counts = self.store.counts_by_client() if self.store is not None else {}
        return {"clients": {name: n for name, n in sorted(counts.items(), key=lambda kv: str(kv[0]))
                            if name is not None},
                "unattributed": counts.get(None, {"feedback": 0, "report": 0})}


def file_digest(path: str | Path) -> str:
    """sha256 of a file: what names the starting weights of a store."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

