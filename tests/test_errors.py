"""One error hierarchy: every error the library raises on purpose is a MarketplaceError, defined in errors.py."""

import ast
import inspect
from pathlib import Path

import marketplace
from marketplace import errors
from marketplace.errors import MarketplaceError

PACKAGE = Path(marketplace.__file__).parent


def error_classes() -> list[type]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]


def test_every_error_class_subclasses_the_base():
    classes = error_classes()
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, MarketplaceError), cls
    assert sorted(errors.__all__) == sorted(c.__name__ for c in classes)
    assert marketplace.MarketplaceError is MarketplaceError


def test_no_module_but_errors_defines_an_exception_class():
    defined = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception")) for b in node.bases):
                defined.setdefault(path.relative_to(PACKAGE).as_posix(), []).append(node.name)
    assert list(defined) == ["errors.py"], defined


def test_the_old_import_paths_still_work():
    from marketplace.client import ServerError
    from marketplace.continual.learner import UnknownRequestError
    from marketplace.data.common import DataError
    from marketplace.distributed.check import WeightsDivergedError
    from marketplace.distributed.collectives import DistributedError
    from marketplace.functional import NonFiniteLossError
    from marketplace.layouts import Unsupported
    from marketplace.market import MarketError
    from marketplace.models.factory import ModelError
    from marketplace.server.engine import RequestError
    from marketplace.training.checkpoint import CheckpointError

    assert (ServerError, UnknownRequestError, DataError, WeightsDivergedError, DistributedError, NonFiniteLossError,
            Unsupported, MarketError, ModelError, RequestError, CheckpointError) == (
        errors.ServerError, errors.UnknownRequestError, errors.DataError, errors.WeightsDivergedError,
        errors.DistributedError, errors.NonFiniteLossError, errors.UnsupportedLayout, errors.MarketError,
        errors.ModelError, errors.RequestError, errors.CheckpointError)


def test_request_errors_carry_an_http_status():
    assert errors.RequestError("bad").status == 422
    e = errors.ServerError(404, "no such request")
    assert e.status == 404 and str(e) == "404: no such request" and isinstance(e, errors.RequestError)
    assert errors.UnknownRequestError("id 3 is not waiting").status == 422
