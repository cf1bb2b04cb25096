"""Option values the commands share: comma-separated numbers (each mistake a one-line error), fresh places."""

from __future__ import annotations

import time

from .. import checks
from ..errors import MarketplaceError


def fresh_dir(command: str) -> str:
    """runs/COMMAND-YYYYmmdd-HHMMSS: a new place for one run's files, never the repository's committed results."""
    return time.strftime(f"runs/{command}-%Y%m%d-%H%M%S")


def ints(text: str, name: str) -> tuple[int, ...]:
    """`4,4,4` -> (4, 4, 4); `name` is the option, for the error."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise MarketplaceError(f"{name} takes comma-separated integers like 4,4,4, got {text!r}") from None


def floats(text: str | None, name: str) -> tuple[float, ...] | None:
    """`0.03,0.1` -> (0.03, 0.1); None stays None."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise MarketplaceError(f"{name} takes comma-separated numbers like 0.03,0.1, got {text!r}") from None


def rates(text: str | float | None, name: str = "--lr") -> float | tuple[float, ...] | None:
    """--lr: `0.15` -> 0.15, `0.15,0.15,0.075` -> one rate per spec; None stays None (the default)."""
    if text is None or isinstance(text, (int, float)):
        return text
    values = floats(text, name)
    return values[0] if len(values) == 1 else values


def per_spec(unit: str) -> bool:
    """--unit: 'spec' (a unit vector per spec) -> True, 'model' (one over the whole model) -> False."""
    checks.one_of("unit", unit, checks.UNITS)
    return unit == "spec"


def nonfinite_policy(value: str) -> str:
    """--on-nonfinite: 'stop' or 'skip' -> the optimizers' 'raise' or 'skip'."""
    checks.one_of("on_nonfinite", value, ("stop", "skip"))
    return "raise" if value == "stop" else "skip"
