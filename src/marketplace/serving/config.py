"""The settings of a learning server, validated once, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import checks
from ..functional import ATTRIBUTIONS


@dataclass
class ServerConfig:
    """How the server learns, batches, stores and guards.

    records: K, labelled records per V2 update. lr / probe_scale / unit /
    seed: the serving optimizer (docs/algorithm.md section 7 defaults: fixed lr
    1e-2, probes at lr, whole-model unit vector). learning: False serves
    plain inference with the base weights and refuses feedback (the
    reference a learning server is compared with). baseline: answer with
    the base weights and learn from each path's loss minus theirs
    (`ContinualLearner(baseline=True)`). attribution: how a step's losses
    are scored: "rank" (centred ranks: one record, however extreme its
    loss, moves an update no more than any other) or "zscore" (V2 as
    published); a store keeps the one it was made with. balanced: each
    served batch gives every vendor an equal share of its requests (each
    request's path is still uniform), so the grouped forward needs no
    padding; False draws each request's path independently, as section 7
    does. store: the directory of the SQLite store and the learner
    checkpoint. checkpoint_every: updates
    between learner checkpoints (also written on shutdown). keep_served:
    the newest served requests kept for their labels (those of superseded
    steps are forgotten anyway); a label for a forgotten one counts stale.
    max_batch / batch_window_ms: the micro-batcher's limits. max_request: inputs in one
    predict request; max_records: records in one feedback or report;
    max_body: bytes in one request body.
    protect_predict: require the token on predict too.
    client_rate / client_burst: requests per second per client (0: no
    limit) and the burst a client may send at once (None: one second's
    worth); predict requests without a valid token share one bucket
    (`serving.limits`). max_head: bytes of a request's URL and headers
    together (the URL alone may take half); more is a JSON 414 or 431
    (`serving.protocol`).
    """

    records: int = 256
    lr: float = 1e-2
    probe_scale: float = 1.0
    unit: str = "model"
    seed: int = 0
    classes: int | None = None  # widen a checkpoint's head to this many classes (a new class, section 7)
    vendors: tuple[int, ...] | None = None  # the served market's vendor counts (None: the checkpoint's)
    rank: int | None = None  # low-rank vendors of this rank, 0 dense (None: the checkpoint's; lowrank.py)
    learning: bool = True
    baseline: bool = False
    attribution: str = "rank"  # centred ranks bound each record's influence on an update; "zscore": V2 as published
    balanced: bool = True
    store: str = "runs/server"
    checkpoint_every: int = 10
    keep_served: int = 1_000_000
    max_batch: int = 512
    batch_window_ms: float = 2.0
    max_request: int = 512
    max_records: int = 8192
    max_body: int = 16 * 2**20
    token: str = ""
    client_records: int | None = None  # records one client may send per step (None: no cap)
    tokens_file: str | None = None  # NAME TOKEN per line, read again when it changes (`serving.auth.Tokens`)
    protect_predict: bool = False
    client_rate: float = 0.0
    client_burst: int | None = None
    max_head: int = 16 * 2**10
    device: str = "cpu"

    def validate(self) -> None:
        """One-line errors naming the field (the CLI names its flag)."""
        if not isinstance(self.records, int) or self.records < 2:
            raise checks.fail(f"records must be an integer >= 2 (V2 standardizes K losses), got {self.records}",
                              "records")
        checks.positive("lr", self.lr)
        checks.positive("probe_scale", self.probe_scale)
        if self.rank is not None and (not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 0):
            raise checks.fail(f"rank must be an integer >= 0 (0 = dense vendors), got {self.rank}", "rank")
        if self.client_records is not None:
            checks.at_least("client_records", self.client_records, 1)
        checks.positive("client_rate", self.client_rate, zero=True)
        if self.client_burst is not None:
            checks.at_least("client_burst", self.client_burst, 1)
        checks.at_least("max_head", self.max_head, 1024)
        checks.one_of("attribution", self.attribution, ATTRIBUTIONS)
        checks.one_of("unit", self.unit, checks.UNITS)
        for name in ("checkpoint_every", "keep_served", "max_batch", "max_request", "max_records", "max_body"):
            checks.at_least(name, getattr(self, name), 1)
        if not 0 <= self.batch_window_ms <= 1000:
            raise checks.fail(f"batch_window_ms must lie in [0, 1000], got {self.batch_window_ms}", "batch_window_ms")
        if self.max_request > self.max_batch:
            raise checks.fail(f"max_request ({self.max_request}) cannot exceed max_batch ({self.max_batch})",
                              "max_request", "max_batch")
        if not self.token and not self.tokens_file:
            raise checks.fail("the server needs a secret: token, $MARKETPLACE_TOKEN or tokens_file",
                              "token", "tokens_file")
        if Path(self.store).exists() and not Path(self.store).is_dir():
            raise checks.fail(f"store {self.store} is a file; it must be a directory (or not exist yet)", "store")
