"""Serving: a model server that learns from its own traffic, and its Python clients.

`marketplace serve CHECKPOINT` runs `create_app(engine_from_checkpoint(...))`
under uvicorn. The market is rebuilt from the checkpoint's model record
(any preset, a user's factory, any input shape). Each predict request goes
along one random path (micro-batched into one `continual.serve` forward)
and is answered with an `Answer`; labels (`/v1/feedback`) or
client-computed losses (`/v1/report`, privacy mode) become records in a
SQLite store before they are acknowledged, and every K of them a V2 update
of the `ContinualLearner`. `Client` predicts and gives feedback;
`PrivateClient` rebuilds the model from the server's record and reports
only (step, path, loss). See docs/server.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each name from its module, imported when first used: the CLI reads ServerConfig's defaults without
# importing FastAPI and uvicorn (the app, the store and the HTTP client import them).
_WHERE = {
    "Answer": "answer", "create_app": "app", "Client": "client", "Prediction": "client", "PrivateClient": "client",
    "ServerError": "client", "ServerConfig": "config", "Engine": "engine", "RequestError": "engine",
    "check_paths": "engine", "engine_from_checkpoint": "load", "engine_from_market": "load", "model_of": "load",
    "specs_of": "load", "ServerProcess": "process", "Store": "store",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # once found, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:
    from .answer import Answer
    from .app import create_app
    from .client import Client, Prediction, PrivateClient, ServerError
    from .config import ServerConfig
    from .engine import Engine, RequestError, check_paths
    from .load import engine_from_checkpoint, engine_from_market, model_of, specs_of
    from .process import ServerProcess
    from .store import Store
