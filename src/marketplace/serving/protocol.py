"""The request head at the edge: an oversized or malformed head gets a short JSON 4xx, never plain text.

uvicorn answers any head it cannot take (a 1 MB URL, 100 KB of headers,
garbage) with a plain-text 400. Every refusal of this server is JSON, so
two layers bound a head to `max_head` bytes (URL and headers together; the
URL alone to half of it):

- `Protocol`, uvicorn's `http=` class (`uvicorn_options`): h11 stops
  buffering an unfinished head past `max_head` bytes; the answer is then
  414 (the request line never ended), 431 (the headers did not), or 400 for
  a head h11 cannot parse. Its stream cannot be parsed further, so the
  connection closes after the answer.
- `HeadLimit`, ASGI middleware: a head that arrived whole in one read but is
  over the limits gets the same 414 / 431, and the connection stays open.
"""

from __future__ import annotations

import http
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_MAX_HEAD = 16 * 2**10  # h11's own default buffer limit


def _limits(max_head: int) -> tuple[int, int]:
    """(bytes of the URL, bytes of the whole head)."""
    return max_head // 2, max_head


def too_long(status: int, max_head: int) -> str:
    """The one-line error of a 414 or 431."""
    url, head = _limits(max_head)
    if status == 414:
        return f"the URL is too long (at most {url} bytes)"
    return f"the request headers are too large (at most {head} bytes with the URL)"


def _json(status: int, message: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": message}).encode()
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], body


class HeadLimit:
    """ASGI middleware: a whole head over the limits is refused (414 URL, 431 headers) before any route runs."""

    def __init__(self, app, limit: int = DEFAULT_MAX_HEAD):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            url, head = _limits(self.limit)
            target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
            size = target + sum(len(k) + len(v) + 4 for k, v in scope["headers"])
            status = 414 if target > url else 431 if size > head else None
            if status:
                headers, body = _json(status, too_long(status, self.limit))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                return await send({"type": "http.response.body", "body": body})
        return await self.app(scope, receive, send)


class _Connection(h11.Connection):
    """h11's server side, remembering the protocol error it raised (uvicorn's handler only gets a message)."""

    error: h11.RemoteProtocolError | None = None

    def next_event(self):
        try:
            return super().next_event()
        except h11.RemoteProtocolError as e:
            self.error = e
            raise


class Protocol(H11Protocol):
    """uvicorn's h11 protocol whose refusals of a head are JSON 414 / 431 / 400 instead of plain-text 400."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.max_head = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD
        self.conn = _Connection(h11.SERVER, self.max_head)

    def refusal(self) -> tuple[int, str]:
        """(status, one line) for the head h11 refused."""
        error = self.conn.error
        if error is not None and error.error_status_hint == 431:  # h11: the unfinished head is over max_head
            head = self.conn.trailing_data[0]
            line = head.find(b"\n")
            status = 414 if line < 0 or line > _limits(self.max_head)[0] else 431
            return status, too_long(status, self.max_head)
        return 400, "malformed HTTP request"

    def send_400_response(self, msg: str) -> None:
        status, message = self.refusal()
        headers, body = _json(status, message)
        reason = http.HTTPStatus(status).phrase.encode()
        for event in (h11.Response(status_code=status, headers=[*headers, (b"connection", b"close")], reason=reason),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def uvicorn_options(max_head: int = DEFAULT_MAX_HEAD) -> dict:
    """The `uvicorn.run` / `uvicorn.Config` arguments that put `Protocol` at the edge with this head limit."""
    return {"http": Protocol, "h11_max_incomplete_event_size": max_head}
