"""Errors a user can cause: each says what is wrong in one line."""


class MarketplaceError(Exception):
    """Base class of every error the library raises on bad input."""


class MarketError(MarketplaceError):
    """The market does not fit the model or the input."""
