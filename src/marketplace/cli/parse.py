"""Option values the commands share: comma-separated numbers, each mistake a one-line error."""

from __future__ import annotations

from ..errors import MarketplaceError


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
