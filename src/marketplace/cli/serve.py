"""`marketplace serve CHECKPOINT`: an HTTP server that learns from the requests it serves."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from ..serving.config import ServerConfig
from . import app
from . import options as opt
from .options import option
from .parse import ints

S = ServerConfig  # the server's defaults; the store's and the token's are worked out here (see serve)


@app.command()
def serve(
    checkpoint: str = typer.Argument(..., help="a `marketplace train` checkpoint (safetensors)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"),
    port: int = typer.Option(8000),
    records: int = opt.records(S, "K: labelled records per V2 update"),
    lr: float = opt.lr(S, "fixed learning rate of the updates"),
    probe_scale: float = opt.probe_scale(S),
    unit: str = opt.unit(S, "unit vector over the whole 'model' or per 'spec'"),
    seed: int = opt.seed(S, "seeds the vendors and the serving paths"),
    classes: Optional[int] = option(S, "classes", "widen the head to this many classes (a new class)"),
    vendors: Optional[str] = opt.vendors(S, "vendors per spec of the served market (default: the checkpoint's), "
                                         "e.g. 4,4,4"),
    rank: Optional[int] = option(S, "rank", "low-rank vendors of this rank, 0 dense (default: the checkpoint's)"),
    store: Optional[str] = typer.Option(None, help="directory of the SQLite store and the learner checkpoint "
                                        "(default: runs/server/<checkpoint>-<its hash>[-rank], one per checkpoint, "
                                        "--baseline and --attribution setting, resumed when the same checkpoint is "
                                        "served again with the same settings)"),
    checkpoint_every: int = opt.checkpoint_every(S, "updates between learner checkpoints (also on SIGTERM)"),
    keep_served: int = option(S, "keep_served", "served requests kept for their labels (those of superseded "
                              "steps are forgotten anyway); a label for an older one counts stale"),
    learning: bool = option(S, "learning", "--no-learning: plain inference with the base weights"),
    baseline: bool = opt.baseline(S, "answer with the base weights; learn from each path's loss minus theirs "
                                  "(one more forward per batch)"),
    attribution: str = opt.attribution(S, "how a step's losses are scored: rank (centred ranks: one record, however "
                                       "extreme its loss, moves an update no more than any other) or zscore (V2, "
                                       "as published); a store keeps the one it was made with"),
    balanced: bool = opt.balanced(S, "spread each served batch evenly over the vendors (no padding) or draw every "
                                  "path independently", "--balanced/--independent"),
    max_batch: int = option(S, "max_batch", "inputs per batched forward"),
    batch_window_ms: float = option(S, "batch_window_ms", "how long a forward waits for more requests"),
    max_request: int = option(S, "max_request", "inputs per predict request"),
    max_body: int = option(S, "max_body", "bytes per request body"),
    token: Optional[str] = typer.Option(None, help="shared secret for feedback, report and admin; prefer "
                                        "$MARKETPLACE_TOKEN or --tokens-file (a command line is visible to every "
                                        "local user) [env: MARKETPLACE_TOKEN]"),
    tokens_file: Optional[str] = option(S, "tokens_file", "named clients, 'NAME TOKEN' per line; edits (a new "
                                        "client, a revoked one) apply without a restart",
                                        envvar="MARKETPLACE_TOKENS_FILE"),
    protect_predict: bool = option(S, "protect_predict", "require the token on predict too"),
    client_records: Optional[int] = option(S, "client_records", "records one client (one token) may send per "
                                           "step; more is refused with 429 (default: no cap)"),
    client_rate: float = option(S, "client_rate", "requests per second per client (one token); predict requests "
                                "without a valid token share one allowance; more is refused with 429 and "
                                "Retry-After (0: no limit)"),
    client_burst: Optional[int] = option(S, "client_burst", "requests a client may send at once after a pause "
                                         "(default: one second's worth of --client-rate)"),
    max_head: int = option(S, "max_head", "bytes of a request's URL and headers together (the URL alone: half); "
                           "more is refused with 414 or 431"),
    device: str = opt.device(S, "cpu (the default), cuda, cuda:1, ..."),
    threads: Optional[int] = typer.Option(None, help="torch intra-op threads"),
    log_level: str = typer.Option("warning", help="uvicorn's log level"),
):
    """Serve predictions along random paths and learn from feedback (docs/server.md)."""
    options = dict(locals())  # the options as given, before anything else is bound here
    import torch
    import uvicorn

    from ..serving import create_app, engine_from_checkpoint
    from ..serving.auth import ENV_TOKEN, resolve_token
    from ..serving.protocol import uvicorn_options

    if threads:
        torch.set_num_threads(threads)
    if tokens_file and not (token or os.environ.get(ENV_TOKEN)):
        secret, made_up = "", False  # only the named clients of the file
    else:
        secret, made_up = resolve_token(token)
    store = store or default_store(checkpoint, baseline, classes, attribution, rank)
    config = server_config(**{**options, "store": store, "token": secret})
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


def server_config(*, vendors: str | None, checkpoint, host, port, threads, log_level, **settings) -> ServerConfig:
    """The ServerConfig of `serve`'s options (the store and the token as worked out)."""
    return ServerConfig(vendors=ints(vendors, "--vendors") if vendors else None, **settings)


def default_store(checkpoint: str, baseline: bool = S.baseline, classes: int | None = S.classes,
                  attribution: str = S.attribution, rank: int | None = S.rank) -> str:
    """runs/server/NAME-HASH[-Nclasses][-baseline][-rank][-lowrankR]: a store of its own for each starting point.

    A store remembers the weights (and head width, baseline setting and
    attribution) it was made for and refuses others, so one shared default
    would refuse the second checkpoint anyone serves. -rank is the
    attribution (zscore has no suffix: the stores made while it was the
    default keep their names, and --attribution zscore resumes them);
    -lowrankR the rank of low-rank vendors.
    """
    path = Path(checkpoint)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "missing"
    return (f"runs/server/{path.stem}-{digest}" + (f"-{classes}classes" if classes else "")
            + ("-baseline" if baseline else "") + ("" if attribution == "zscore" else f"-{attribution}")
            + (f"-lowrank{rank}" if rank is not None else ""))
