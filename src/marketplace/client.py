"""Moved to `marketplace.serving.client`; this name still imports."""

from .serving.client import Client, Prediction, PrivateClient, ServerError

__all__ = ["Client", "Prediction", "PrivateClient", "ServerError"]
