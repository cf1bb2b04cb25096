"""A model server that learns from its own traffic (ALGORITHM.md section 7, over HTTP).

`marketplace serve CHECKPOINT` runs `create_app(engine_from_checkpoint(...))`
under uvicorn. Each predict request goes along one random path (micro-
batched into one `continual.serve` forward); labels (`/v1/feedback`) or
client-computed losses (`/v1/report`, privacy mode) become records in a
SQLite store before they are acknowledged, and every K of them a V2 update
of the `ContinualLearner`. See docs/server.md.
"""

from .app import create_app
from .config import ServerConfig
from .engine import Engine, Predictions, RequestError
from .load import engine_from_checkpoint, engine_from_market, specs_of
from .store import Store

__all__ = ["Engine", "Predictions", "RequestError", "ServerConfig", "Store", "create_app", "engine_from_checkpoint",
           "engine_from_market", "specs_of"]
