"""The argument checks every market optimizer and the estimator share.

Each raises a one-line ValueError that names the argument as the caller
spelled it, the way torch.optim's constructors do.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0 (a learning rate, a probe scale, a clip norm)."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number > 0)")
    return float(value)


def check_fraction(name: str, value: Any) -> float:
    """A number in [0, 1): a per-step decay or a smoothing factor."""
    if not _is_number(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid {name}: {value!r} (must be in [0, 1))")
    return float(value)


def check_seed(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"Invalid seed: {value!r} (must be an int)")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r} (choose from {', '.join(map(repr, choices))})")
    return value


def check_per_spec(name: str, value: Any, depth: int, noun: str = "values") -> list[float]:
    """One positive number for every spec, or the same one for all: [depth] floats."""
    if _is_number(value) or isinstance(value, str) or not isinstance(value, Sequence):
        values = [value] * depth
    else:
        values = list(value)
    if len(values) != depth:
        raise ValueError(f"Invalid {name}: {len(values)} {noun} for a market of {depth} specs")
    return [check_positive(name, v) for v in values]


def renamed(name: str, value: Any, old: str, old_value: Any, default: Any) -> tuple[str, Any]:
    """(the name the caller used, its value) for an argument that also has an old spelling."""
    if old_value is None:
        return name, default if value is None else value
    if value is not None:
        raise ValueError(f"give {name} or its old name {old}, not both")
    return old, old_value
