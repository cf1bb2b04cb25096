"""The shared-secret token: `Authorization: Bearer TOKEN` (or `X-Token: TOKEN`), compared in constant time."""

from __future__ import annotations

import hmac
import os
import secrets

from .engine import RequestError

ENV_TOKEN = "MARKETPLACE_TOKEN"


def resolve_token(given: str | None) -> tuple[str, bool]:
    """(the token, whether it was made up here): --token, else $MARKETPLACE_TOKEN, else a fresh random one."""
    token = given or os.environ.get(ENV_TOKEN, "")
    if token:
        return token, False
    return secrets.token_urlsafe(24), True


def presented(headers) -> str | None:
    """The token a request presents, if any."""
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-token")


def check_token(headers, token: str) -> None:
    """Raise a 401 unless the request presents `token`; the comparison takes the same time for any guess."""
    given = presented(headers)
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise RequestError("a valid token is required (Authorization: Bearer TOKEN)", 401)
