"""`marketplace serve CHECKPOINT`: an HTTP server that learns from the requests it serves."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from . import app
from .parse import ints


@app.command()
def serve(
    checkpoint: str = typer.Argument(..., help="a `marketplace train` checkpoint (safetensors)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"),
    port: int = typer.Option(8000),
    records: int = typer.Option(256, help="K: labelled records per V2 update"),
    lr: float = typer.Option(1e-2, help="fixed learning rate of the updates"),
    probe_scale: float = typer.Option(1.0, help="vendors probe at lr * probe_scale"),
    unit: str = typer.Option("model", help="unit vector over the whole 'model' or per 'spec'"),
    seed: int = typer.Option(0, help="seeds the vendors and the serving paths"),
    classes: Optional[int] = typer.Option(None, help="widen the head to this many classes (a new class)"),
    vendors: Optional[str] = typer.Option(None, help="vendors per spec of the served market (default: the "
                                                     "checkpoint's), e.g. 4,4,4"),
    rank: Optional[int] = typer.Option(None, help="low-rank vendors of this rank, 0 dense (default: the checkpoint's)"),
    store: Optional[str] = typer.Option(None, help="directory of the SQLite store and the learner checkpoint "
                                        "(default: runs/server/<checkpoint>-<its hash>, one per checkpoint and "
                                        "--baseline setting, resumed when the same checkpoint is served again)"),
    checkpoint_every: int = typer.Option(10, help="updates between learner checkpoints (also on SIGTERM)"),
    keep_served: int = typer.Option(1_000_000, help="served requests kept for their labels (those of superseded "
                                    "steps are forgotten anyway); a label for an older one counts stale"),
    learning: bool = typer.Option(True, help="--no-learning: plain inference with the base weights"),
    baseline: bool = typer.Option(False, help="answer with the base weights; learn from each path's loss minus "
                                  "theirs (one more forward per batch)"),
    attribution: str = typer.Option("zscore", help="how a step's losses are scored: zscore (V2, as published) or "
                                    "rank (centred ranks: one record, however extreme its loss, moves an update "
                                    "no more than any other)"),
    balanced: bool = typer.Option(True, "--balanced/--independent", help="spread each served batch evenly over "
                                  "the vendors (no padding) or draw every path independently"),
    max_batch: int = typer.Option(512, help="inputs per batched forward"),
    batch_window_ms: float = typer.Option(2.0, help="how long a forward waits for more requests"),
    max_request: int = typer.Option(512, help="inputs per predict request"),
    max_body: int = typer.Option(16 * 2**20, help="bytes per request body"),
    token: Optional[str] = typer.Option(None, help="shared secret for feedback, report and admin; prefer "
                                        "$MARKETPLACE_TOKEN or --tokens-file (a command line is visible to every "
                                        "local user) [env: MARKETPLACE_TOKEN]"),
    tokens_file: Optional[str] = typer.Option(None, envvar="MARKETPLACE_TOKENS_FILE",
                                              help="named clients, 'NAME TOKEN' per line; edits (a new client, a "
                                                   "revoked one) apply without a restart"),
    protect_predict: bool = typer.Option(False, help="require the token on predict too"),
    client_records: Optional[int] = typer.Option(None, help="records one client (one token) may send per step; "
                                                 "more is refused with 429 (default: no cap)"),
    client_rate: float = typer.Option(0.0, help="requests per second per client (one token); predict requests "
                                      "without a valid token share one allowance; more is refused with 429 and "
                                      "Retry-After (0: no limit)"),
    client_burst: Optional[int] = typer.Option(None, help="requests a client may send at once after a pause "
                                               "(default: one second's worth of --client-rate)"),
    max_head: int = typer.Option(16 * 2**10, help="bytes of a request's URL and headers together (the URL alone: "
                                 "half); more is refused with 414 or 431"),
    device: str = typer.Option("cpu"),
    threads: Optional[int] = typer.Option(None, help="torch intra-op threads"),
    log_level: str = typer.Option("warning", help="uvicorn's log level"),
):
    """Serve predictions along random paths and learn from feedback (docs/server.md)."""
    import torch
    import uvicorn

    from ..serving import ServerConfig, create_app, engine_from_checkpoint
    from ..serving.auth import ENV_TOKEN, resolve_token
    from ..serving.protocol import uvicorn_options

    if threads:
        torch.set_num_threads(threads)
    if tokens_file and not (token or os.environ.get(ENV_TOKEN)):
        secret, made_up = "", False  # only the named clients of the file
    else:
        secret, made_up = resolve_token(token)
    store = store or default_store(checkpoint, baseline, classes, attribution, rank)
    config = ServerConfig(records=records, lr=lr, probe_scale=probe_scale, unit=unit, seed=seed, classes=classes,
                          vendors=ints(vendors, "--vendors") if vendors else None, rank=rank,
                          learning=learning, baseline=baseline, attribution=attribution, balanced=balanced,
                          store=store,
                          checkpoint_every=checkpoint_every, keep_served=keep_served, max_batch=max_batch,
                          batch_window_ms=batch_window_ms, max_request=max_request, max_body=max_body,
                          token=secret, tokens_file=tokens_file, protect_predict=protect_predict,
                          client_records=client_records, client_rate=client_rate, client_burst=client_burst,
                          max_head=max_head, device=device)
    engine = engine_from_checkpoint(checkpoint, config)
    status, model = engine.status(), engine.model
    print(f"marketplace serve: http://{host}:{port} step {status['step']} "
          f"({status['replayed']} records replayed from {store}), learning {'on' if learning else 'off'}; "
          f"{model['source']} on inputs {model['input_shape']}, {model['served_classes']} classes, "
          f"vendors {list(engine.market.vendor_counts)}", file=sys.stderr, flush=True)
    if made_up:
        print(f"token (made up for this run; set --token or $MARKETPLACE_TOKEN to choose one): {secret}",
              file=sys.stderr, flush=True)
    uvicorn.run(create_app(engine), host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=10, **uvicorn_options(config.max_head))


def default_store(checkpoint: str, baseline: bool = False, classes: int | None = None,
                  attribution: str = "zscore", rank: int | None = None) -> str:
    """runs/server/NAME-HASH[-Nclasses][-baseline]: a store of its own for each starting point.

    A store remembers the weights (and head width, and baseline setting) it
    was made for and refuses others, so one shared default would refuse the
    second checkpoint anyone serves.
    """
    path = Path(checkpoint)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "missing"
    return (f"runs/server/{path.stem}-{digest}" + (f"-{classes}classes" if classes else "")
            + ("-baseline" if baseline else "") + ("" if attribution == "zscore" else f"-{attribution}")
            + (f"-rank{rank}" if rank is not None else ""))
