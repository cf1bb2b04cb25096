"""Moved to `marketplace.serving`; this name and its submodules (`marketplace.server.engine`, ...) still import."""

import importlib
import sys

from ..serving import *  # noqa: F401,F403
from ..serving import __all__  # noqa: F401

for _name in ("answer", "app", "auth", "batcher", "config", "engine", "load", "metrics", "process", "schemas",
              "store"):
    sys.modules[f"{__name__}.{_name}"] = globals()[_name] = importlib.import_module(f"..serving.{_name}", __name__)
