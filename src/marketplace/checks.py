"""The checks the configs run on their own fields, each a one-line MarketplaceError that names the field.

Each config checks the values it owns with these, so one rule (say, what a
unit may be) reads the same wherever it applies; the error's `fields` let
the CLI say `--probe-scale` where the library says `probe_scale`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from .errors import MarketplaceError

UNITS = ("spec", "model")  # a unit vector per spec, or one over the whole model


def fail(message: str, *fields: str) -> MarketplaceError:
    """The error to raise: `message` names `fields` word for word."""
    return MarketplaceError(message, fields=fields)


def one_of(field: str, value: Any, choices: Iterable[str]) -> None:
    """`unit must be 'spec' or 'model', got 'layer'`."""
    choices = tuple(choices)
    if value not in choices:
        named = " or ".join(repr(c) for c in choices) if len(choices) <= 2 else \
            ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        raise fail(f"{field} must be {named}, got {value!r}", field)


def known(field: str, value: Any, choices: Iterable[str]) -> None:
    """`unknown optimizer 'lion'; choose from sgd, momentum, adam, adamw`: for longer lists of names."""
    choices = tuple(choices)
    if value not in choices:
        raise fail(f"unknown {field} {value!r}; choose from {', '.join(choices)}", field)


def at_least(field: str, value: int | float, low: int | float) -> None:
    if value < low:
        raise fail(f"{field} must be >= {low}, got {value}", field)


def positive(field: str, value: float, zero: bool = False) -> None:
    """A finite number > 0 (>= 0 with `zero`)."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise fail(f"{field} must be a finite number {'>=' if zero else '>'} 0, got {value}", field)


def fraction(field: str, value: float, closed: bool = False) -> None:
    """In [0, 1) ([0, 1] with `closed`)."""
    if not (math.isfinite(value) and 0 <= value and (value <= 1 if closed else value < 1)):
        raise fail(f"{field} must be in [0, 1{']' if closed else ')'}, got {value}", field)
