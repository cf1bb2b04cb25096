"""A user's model from the command line: `pkg.module:factory` or `path/to/file.py:factory`.

The factory returns the specs: a list of modules, or one `nn.Sequential`
that `split` indices cut into specs. It is called without arguments, or with
`input_shape` (one example, e.g. (1, 28, 28)) and `classes` if it declares
them, so one factory can serve several data sets.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from torch import nn

from ..errors import ModelError


def is_factory_source(source: str) -> bool:
    """`module:attr` or `file.py:attr` (a Windows drive letter is not a module)."""
    module, sep, attr = source.rpartition(":")
    return bool(sep and module and attr and not (len(module) == 1 and module.isalpha()))


def canonical_source(source: str) -> str:
    """The source as a checkpoint records it: a file path made absolute, a module name as given."""
    module, _, attr = source.rpartition(":")
    if _is_path(module):
        return f"{Path(module).expanduser().resolve()}:{attr}"
    return source


def _is_path(module: str) -> bool:
    return module.endswith(".py") or os.sep in module or "/" in module


def _import(module: str, source: str):
    if _is_path(module):
        path = Path(module).expanduser()
        if not path.is_file():
            raise ModelError(f"model {source}: no file {path}", fields=("model",))
        name = "marketplace_user_model_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded  # dataclasses and pickling look modules up by name
        try:
            spec.loader.exec_module(loaded)
        except Exception as e:
            sys.modules.pop(name, None)
            raise ModelError(f"model {source}: {path} failed to import ({type(e).__name__}: {e})",
                             fields=("model",)) from e
        return loaded
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:  # as `python -m` does: a package in the working directory is importable
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModelError(f"model {source}: cannot import {module} ({e})", fields=("model",)) from e
    except Exception as e:
        raise ModelError(f"model {source}: {module} failed to import ({type(e).__name__}: {e})",
                         fields=("model",)) from e
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def load_factory(source: str) -> Callable:
    """The callable that `source` names."""
    if not is_factory_source(source):
        raise ModelError(f"model {source!r} is neither a preset nor MODULE:FACTORY or FILE.py:FACTORY",
                         fields=("model",))
    module, _, attr = source.rpartition(":")
    loaded = _import(module, source)
    factory = getattr(loaded, attr, None)
    if factory is None:
        raise ModelError(f"model {source}: {module} has no {attr!r}", fields=("model",))
    if not callable(factory):
        raise ModelError(f"model {source}: {attr} is a {type(factory).__name__}, not a function", fields=("model",))
    return factory


def _arguments(factory: Callable, input_shape: Sequence[int], classes: int) -> dict:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    any_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    offered = {"input_shape": tuple(input_shape), "classes": classes}
    return {k: v for k, v in offered.items() if any_kw or k in params}


def split_sequential(model: nn.Sequential, split: Sequence[int]) -> list[nn.Module]:
    """Cut a Sequential before each index in `split`: (3, 6) -> [0:3], [3:6], [6:]."""
    n = len(model)
    bounds = [0, *split, n]
    if any(not 0 < i < n for i in split) or any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise ModelError(f"split {','.join(map(str, split))} must be increasing layer indices "
                         f"between 1 and {n - 1} (the Sequential has {n} layers)", fields=("split",))
    return [nn.Sequential(*model[a:b]) for a, b in zip(bounds, bounds[1:])]


def as_specs(result: object, source: str, split: Sequence[int] | None = None,
             specs: int | None = None) -> list[nn.Module]:
    """Check what a factory returned and turn it into specs.

    specs: how many the caller expects (one per --vendors count), for the error messages.
    """
    if isinstance(result, nn.Sequential):
        if split:
            return split_sequential(result, split)
        if specs not in (None, 1):
            raise ModelError(f"model {source} returns one nn.Sequential of {len(result)} layers: "
                             f"give split with {specs - 1} layer indices to cut it into {specs} specs",
                             fields=("model", "split"))
        return [result]
    if split:
        raise ModelError(f"split cuts an nn.Sequential, but model {source} returns a {type(result).__name__}",
                         fields=("split", "model"))
    if isinstance(result, (list, tuple, nn.ModuleList)) and len(result) > 0:
        for i, item in enumerate(result):
            if not isinstance(item, nn.Module):
                raise ModelError(f"model {source} returned a list whose item {i} is a "
                                 f"{type(item).__name__}, not an nn.Module", fields=("model",))
        return list(result)
    raise ModelError(f"model {source} returned a {type(result).__name__}: a factory returns a non-empty "
                     "list of nn.Modules (one per spec) or one nn.Sequential with split", fields=("model", "split"))


def build_user_model(source: str, input_shape: Sequence[int], classes: int,
                     split: Sequence[int] | None = None, specs: int | None = None) -> list[nn.Module]:
    """Import the factory `source` names, call it and return its specs."""
    factory = load_factory(source)
    try:
        result = factory(**_arguments(factory, input_shape, classes))
    except Exception as e:
        raise ModelError(f"model {source}: the factory raised {type(e).__name__}: {e}", fields=("model",)) from e
    return as_specs(result, source, split, specs)
