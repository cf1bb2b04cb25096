"""The HTTP surface (FastAPI): predict, feedback, privacy mode, status, metrics.

`create_app(engine)` wires an `Engine` to the routes. One engine thread runs
every forward, record and update in order (a single-worker executor);
predict requests reach it through the micro-batcher, never one forward per
request. Every refusal is a 4xx JSON `{"error": "one line"}`; the server
keeps serving. Each request is checked at the edge, in this order: its head
(`protocol.HeadLimit`), its body's size (`BodyLimit`), its token, its
client's rate (`limits.RateLimiter`), then its content.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException

from ..errors import MarketplaceError, RateLimited
from .auth import Tokens
from .batcher import MicroBatcher
from .limits import ANONYMOUS, RateLimiter
from .engine import Engine, RequestError
from .metrics import Metrics
from .protocol import HeadLimit
from .schemas import FEEDBACK, REPORT, check_inputs, decode_json, decode_raw, normalize_pixels, parse_list

log = logging.getLogger("marketplace.server")
RAW = "application/octet-stream"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is refused with 413 before it is read whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _error(400, "Content-Length is not a number")(scope, receive, send)
            if int(length) > self.limit:
                return await _error(413, f"the body has {int(length)} bytes; the limit is {self.limit}")(
                    scope, receive, send)
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True  # chunked: read up to the limit, then replay
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await _error(413, f"the body is over the limit of {self.limit} bytes")(scope, receive, send)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def create_app(engine: Engine) -> FastAPI:
    """The server for `engine`; it checkpoints the learner when the app shuts down (SIGTERM included)."""
    config = engine.config
    metrics = Metrics()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
    batcher_box: dict[str, MicroBatcher] = {}

    @asynccontextmanager
    async def lifespan(app):
        batcher = MicroBatcher(engine.predict, executor, config.max_batch, config.batch_window_ms / 1000,
                               on_batch=metrics.batch)
        batcher.start()
        batcher_box["b"] = batcher
        try:
            yield
        finally:
            await batcher.stop()
            await asyncio.get_running_loop().run_in_executor(executor, engine.close)
            executor.shutdown(wait=True)

    app = FastAPI(title="marketplace", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine

    async def on_engine(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.request(getattr(route, "path", "other"), response.status_code, time.perf_counter() - start)
        return response

    @app.exception_handler(RequestError)
    async def refused(request, e: RequestError):
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        if isinstance(e, RateLimited):
            headers = {"Retry-After": str(e.retry_after)}
        return JSONResponse({"error": str(e)}, status_code=e.status, headers=headers)

    @app.exception_handler(MarketplaceError)
    async def bad_input(request, e: MarketplaceError):
        return _error(422, str(e).splitlines()[0] if str(e) else type(e).__name__)

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        return _error(422, str(e.errors()[0].get("msg", "invalid request")))

    @app.exception_handler(Exception)
    async def crashed(request, e: Exception):  # a bug, not the client's mistake: logged, one line, still serving
        log.exception("internal error on %s", request.url.path)
        return _error(500, f"internal error: {type(e).__name__}")

    tokens = Tokens(config.token, config.tokens_file)
    limiter = RateLimiter(config.client_rate, config.client_burst)

    def guard(request: Request) -> None:
        """The token (401), then its client's rate (429), before the body is read."""
        request.state.client = tokens.check(request.headers)
        limiter.take(request.state.client)

    @app.post("/v1/predict")
    async def predict(request: Request):
        if config.protect_predict:
            guard(request)
        elif limiter.rate:  # a valid token draws on its client's bucket; anything else on the one shared bucket
            limiter.take(tokens.identify(request.headers) or ANONYMOUS)
        body = await request.body()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == RAW:
            x = decode_raw(body, request.headers.get("x-shape"), request.headers.get("x-dtype"))
        elif kind in ("application/json", ""):
            x = decode_json(body)
        else:
            raise RequestError(f"Content-Type must be application/json or {RAW}, got {kind!r}", 415)
        x = check_inputs(x, engine.input_shape, config.max_request)
        if x.dtype == torch.uint8:
            x = normalize_pixels(x, engine.pixels)
        answer = await batcher_box["b"].submit(x)
        return answer.to_json()

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        guard(request)
        items = parse_list(FEEDBACK, await request.body(), "feedback", config.max_records)
        return await on_engine(engine.feedback, [i.id for i in items], [i.label for i in items],
                               request.state.client)

    @app.post("/v1/report")
    async def report(request: Request):
        guard(request)
        items = parse_list(REPORT, await request.body(), "report", config.max_records)
        losses = torch.tensor([item.loss for item in items], dtype=torch.float64)
        return await on_engine(engine.report, [item.step for item in items], [item.path for item in items], losses,
                               request.state.client)

    @app.get("/v1/market")
    async def market(request: Request):
        guard(request)
        return await on_engine(engine.market_info)

    @app.get("/v1/weights")
    async def weights(request: Request):
        guard(request)
        version, blob = await on_engine(engine.weights)
        etag = f'"{version}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(blob, media_type=RAW, headers={"ETag": etag, "X-Version": version})

    @app.post("/v1/admin/checkpoint")
    async def checkpoint(request: Request):
        guard(request)
        path = await on_engine(engine.checkpoint)
        return {"step": engine.step, "path": None if path is None else str(path)}

    @app.get("/v1/status")
    async def status(request: Request):
        """Public; a valid token adds the records per client (client names are for token holders only)."""
        answer = engine.status()
        if tokens.identify(request.headers) is not None:
            answer["records_by_client"] = await on_engine(engine.records_by_client)
        return answer

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(engine.status()), media_type="text/plain; version=0.0.4")

    @app.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def unknown(rest: str):
        shown = rest if len(rest) <= 80 else rest[:80] + "..."  # never echo a long path back
        raise RequestError(f"no such endpoint: /{shown}", 404)

    app.add_middleware(BodyLimit, limit=config.max_body)
    app.add_middleware(HeadLimit, limit=config.max_head)  # added last: runs first
    return app
