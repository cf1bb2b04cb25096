"""Every error the library raises on purpose, in one place; each says what is wrong in one line.

Catch `MarketplaceError` to catch them all. Messages name the library's
arguments (`vendors`, `sampling`), not command-line flags; an error's
`fields` lists the arguments it names, and the CLI shows each as its flag.

    MarketplaceError
    ├── MarketError            the market does not fit the model or the input
    │   └── UnsupportedLayout  no batched layout rule for a spec (caught inside: vmap instead)
    ├── ModelError             a model cannot be found, built or split
    ├── DataError              a data set is missing, corrupt, or could not be downloaded
    ├── CheckpointError        a checkpoint is missing, corrupt, or does not fit
    ├── NonFiniteLossError     a path's loss is NaN or infinite
    ├── RequestError           a serving request is refused (carries an HTTP status)
    │   ├── UnknownRequestError  a label for a request that is not waiting for one
    │   └── ServerError          the same refusal, as the client receives it
    └── DistributedError       a collective failed: a rank died, stalled or was unreachable
        └── WeightsDivergedError  the ranks no longer hold bit-identical weights
"""

from __future__ import annotations


class MarketplaceError(Exception):
    """Base class of every error the library raises on bad input or a failed operation.

    fields: the arguments (config fields) the message names, word for word, so that a front end
    can name them its own way (the CLI: `--probe-scale` for `probe_scale`).
    """

    def __init__(self, *args, fields: tuple[str, ...] = ()):
        super().__init__(*args)
        self.fields = tuple(fields)


class MarketError(MarketplaceError):
    """The market does not fit the model or the input."""


class UnsupportedLayout(MarketError):
    """The grouped layout has no rule for this module or shape; the caller falls back to vmap."""


class ModelError(MarketplaceError):
    """A model cannot be found, built or split into specs."""


class DataError(MarketplaceError):
    """A data set is missing, corrupt, or could not be downloaded."""


class CheckpointError(MarketplaceError):
    """A checkpoint is missing, corrupt, or does not fit the market."""


class NonFiniteLossError(MarketplaceError):
    """A path's loss is NaN or infinite; no update was made."""


class RequestError(MarketplaceError):
    """A request the server refuses; `status` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class RateLimited(RequestError):
    """A 429 that says when to come back: `retry_after` seconds (an integer, at least 1, for Retry-After)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, 429)
        self.retry_after = retry_after


class UnknownRequestError(RequestError):
    """A label arrived for a request id that is not waiting for one."""


class ServerError(RequestError):
    """The server refused a request, as the client sees it: the HTTP status and its one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}", status)


class DistributedError(MarketplaceError):
    """A collective failed: a peer rank died, stalled past the timeout, or could not be reached."""


class WeightsDivergedError(DistributedError):
    """The ranks no longer hold bit-identical weights."""


__all__ = [
    "CheckpointError", "DataError", "DistributedError", "MarketError", "MarketplaceError", "ModelError",
    "NonFiniteLossError", "RateLimited", "RequestError", "ServerError", "UnknownRequestError", "UnsupportedLayout",
    "WeightsDivergedError",
]
