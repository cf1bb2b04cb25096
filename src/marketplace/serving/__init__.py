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

from .answer import Answer
from .app import create_app
from .client import Client, Prediction, PrivateClient, ServerError
from .config import ServerConfig
from .engine import Engine, RequestError, check_paths
from .load import engine_from_checkpoint, engine_from_market, model_of, specs_of
from .process import ServerProcess
from .store import Store

__all__ = ["Answer", "Client", "Engine", "Prediction", "PrivateClient", "RequestError", "ServerConfig",
           "ServerError", "ServerProcess", "Store", "check_paths", "create_app", "engine_from_checkpoint",
           "engine_from_market", "model_of", "specs_of"]
