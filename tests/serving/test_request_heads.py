"""The head of a request at the edge, over raw sockets to a real uvicorn server on 127.0.0.1.

A URL or headers over `max_head` and a malformed head get a short JSON 4xx
(never uvicorn's plain-text 400); a refusal of a whole head keeps the
connection open for the next request.
"""

import json
import socket
import threading
import time

import pytest
import torch
import uvicorn

from marketplace import Market
from marketplace.models import mlp
from marketplace.serving import ServerConfig, create_app, engine_from_market
from marketplace.serving.process import free_port
from marketplace.serving.protocol import uvicorn_options

MAX_HEAD = 4096  # a URL of at most 2048 bytes, a head of at most 4096


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    torch.manual_seed(0)
    config = ServerConfig(records=4, store=str(tmp_path_factory.mktemp("protocol") / "store"), token="t",
                          max_head=MAX_HEAD)
    app = create_app(engine_from_market(Market(mlp([6, 5, 3]), [2, 2]), config, (6,)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="critical",
                                           **uvicorn_options(MAX_HEAD)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 30 s"
    yield server.config.port
    server.should_exit = True
    thread.join(30)


def answer(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One response read off `sock`: (status, headers, body); the body by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer: {data[:200]!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


def closed(sock: socket.socket) -> bool:
    """The server closed the connection (nothing more to read)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def refused(response: tuple[int, dict, bytes], want: int, *words: str) -> None:
    status, headers, body = response
    assert status == want, (status, body[:200])
    assert headers["content-type"] == "application/json" and len(body) < 200
    error = json.loads(body)["error"]
    assert all(w in error for w in words), error


def send_all_you_can(sock: socket.socket, data: bytes) -> None:
    """Send `data` until the server stops reading (it answers and closes once the head passed its limit)."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def still_open(sock: socket.socket) -> None:
    """The connection serves the next request."""
    sock.sendall(get(b"/v1/status"))
    status, headers, body = answer(sock)
    assert status == 200 and "step" in json.loads(body)


def test_a_1_mb_url_is_a_json_414_and_the_connection_closes(port):
    with connect(port) as sock:
        sender = threading.Thread(target=send_all_you_can, args=(sock, get(b"/" + b"a" * 10**6)))
        sender.start()
        response = answer(sock)
        sender.join(30)
        refused(response, 414, "URL", "2048")
        assert response[1]["connection"] == "close" and closed(sock)


def test_a_whole_url_over_the_limit_is_a_json_414_and_the_connection_stays_open(port):
    with connect(port) as sock:
        sock.sendall(get(b"/v1/status?" + b"q" * 3000))
        refused(answer(sock), 414, "URL")
        still_open(sock)
        body = b'{"inputs": [[0, 0, 0, 0, 0, 0]]}'  # a body the refusal never read is skipped, not parsed as a head
        sock.sendall(b"POST /v1/predict?" + b"q" * 3000 + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        refused(answer(sock), 414, "URL")
        still_open(sock)


def test_headers_over_the_limit_are_a_json_431(port):
    with connect(port) as sock:  # whole: refused, the connection kept
        sock.sendall(get(b"/v1/status", b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 100) for i in range(40))))
        refused(answer(sock), 431, "headers")
        still_open(sock)
    with connect(port) as sock:  # one header still arriving past the limit: refused, closed
        sender = threading.Thread(target=send_all_you_can, args=(sock, get(b"/", b"X-Pad: " + b"p" * 200_000)))
        sender.start()
        response = answer(sock)
        sender.join(30)
        refused(response, 431, "headers", "4096")
        assert response[1]["connection"] == "close" and closed(sock)


@pytest.mark.parametrize("head", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
                                  b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"\x00\x01\x02\r\n\r\n"],
                         ids=["no method", "bad header", "bad length", "binary"])
def test_a_malformed_head_is_a_json_400(port, head):
    with connect(port) as sock:
        sock.sendall(head)
        refused(answer(sock), 400, "malformed")


def test_a_404_does_not_echo_a_long_path_and_refusals_keep_the_connection(port):
    with connect(port) as sock:
        sock.sendall(get(b"/" + b"z" * 1500))
        response = answer(sock)
        refused(response, 404, "no such endpoint")
        assert response[2].count(b"z") <= 80
        sock.sendall(b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]")
        refused(answer(sock), 401, "token")
        still_open(sock)
