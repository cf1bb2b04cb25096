"""Client tokens: `Authorization: Bearer TOKEN` (or `X-Token: TOKEN`), compared in constant time.

A server has one shared token (`--token` or $MARKETPLACE_TOKEN), named
"default", and/or a tokens file with one client per line, `NAME TOKEN`
(`#` starts a comment). The file is read again when it changes, so a client
is added or revoked without a restart, and no token has to appear on a
command line, where any local user could read it.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from pathlib import Path

from ..errors import MarketplaceError, RequestError

ENV_TOKEN = "MARKETPLACE_TOKEN"
ENV_TOKENS_FILE = "MARKETPLACE_TOKENS_FILE"
RECHECK_SECONDS = 1.0  # how often the tokens file's modification time is looked at


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


def read_tokens(path: str | Path) -> dict[str, str]:
    """{token: client name} from a tokens file; a malformed line is a one-line error naming it."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) < 16:
            raise MarketplaceError(f"{path}, line {number}: expected 'NAME TOKEN' with a token of at least "
                                   "16 characters")
        name, token = parts
        if token in tokens:
            raise MarketplaceError(f"{path}, line {number}: the token of {name!r} is already {tokens[token]!r}'s")
        tokens[token] = name
    return tokens


class Tokens:
    """The clients a server accepts: the shared token (named "default") and those of a tokens file, kept fresh."""

    def __init__(self, token: str = "", path: str | Path | None = None):
        self.token, self.path = token, Path(path) if path else None
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._checked = 0.0
        self._file: dict[str, str] = {}
        if self.path is not None:
            self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        try:
            stat = self.path.stat()
        except OSError:
            if force:
                raise MarketplaceError(f"no tokens file at {self.path}") from None
            self._file, self._stamp = {}, None  # the file is gone: its clients are revoked
            return
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp != self._stamp:
            try:
                self._file = read_tokens(self.path)
            except MarketplaceError:
                if force:
                    raise
                return  # a half-written edit: keep the clients of the last good version
            self._stamp = stamp

    def identify(self, headers) -> str | None:
        """The name of the client the request's token belongs to; None without a token or with an unknown one."""
        given = presented(headers)
        if given is not None:
            if self.token and hmac.compare_digest(given.encode(), self.token.encode()):
                return "default"
            if self.path is not None:
                with self._lock:
                    self._reload()
                    known = self._file
                for token, name in known.items():  # every entry compared, in constant time each
                    if hmac.compare_digest(given.encode(), token.encode()):
                        return name
        return None

    def check(self, headers) -> str:
        """The name of the client the request's token belongs to; a 401 when it belongs to none."""
        name = self.identify(headers)
        if name is None:
            raise RequestError("a valid token is required (Authorization: Bearer TOKEN)", 401)
        return name


def check_token(headers, token: str) -> None:
    """Raise a 401 unless the request presents `token`; the comparison takes the same time for any guess."""
    Tokens(token).check(headers)
