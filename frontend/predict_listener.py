"""A lean HTTP/1.1 listener for ``POST /predict`` alone (``parm serve --predict-port``): an asyncio
Protocol with httptools' parser (llhttp, as uvicorn uses; frontend.predict_conn) in front of the same
Service, answering through the same code as the aiohttp route (frontend.handlers.predict_body,
error_response) but without aiohttp's request objects, routing and middleware: less CPU and latency
per query (BENCHMARKS.md). Probes, metrics, stats and V2 stay on the main port, as Triton and
TorchServe keep inference apart from the rest.
"""
from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
import urllib.parse

import orjson

from frontend import handlers
from frontend.errors import MethodNotAllowed, RouteNotFound, ServingError
from frontend.predict_conn import PredictProtocol, Request
from frontend.service import Service

log = logging.getLogger(__name__)
KEEPALIVE_S = 75.0       # an idle connection is closed after this long (aiohttp's default)
SWEEP_S = 5.0            # how often idle connections are looked for
ERROR_TYPE = "application/json; charset=utf-8"  # as aiohttp's json_response, which the main port's errors use
REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed",
           413: b"Payload Too Large", 415: b"Unsupported Media Type", 500: b"Internal Server Error",
           503: b"Service Unavailable", 504: b"Gateway Timeout"}


class _Date:
    """The Date header, formatted once per second."""

    def __init__(self) -> None:
        self._second, self._value = -1, b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, email.utils.formatdate(now, usegmt=True).encode()
        return self._value


_DATE = _Date()


def response(status: int, content_type: str, body: bytes, req: Request, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response to ``req`` (headers only for HEAD)."""
    head = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error")), b"Content-Type: " + content_type.encode(),
            b"Content-Length: %d" % len(body), b"Date: " + _DATE.header()]
    if not req.keep_alive:
        head.append(b"Connection: close")
    head += [f"{k}: {v}".encode("latin-1") for k, v in (headers or {}).items()]
    return b"\r\n".join(head) + b"\r\n\r\n" + (b"" if req.method == b"HEAD" else body)


class PredictListener:
    """The listening socket and its connections (frontend.predict_conn.PredictProtocol)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.connections: set[PredictProtocol] = set()
        self.server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        """Listen; returns the port (``port`` 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: PredictProtocol(self), host, port,
                                               reuse_port=reuse_port or None)
        self._sweeper = asyncio.create_task(self._sweep())
        return int(self.server.sockets[0].getsockname()[1])

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def close(self, grace_s: float = 1.0) -> None:
        """Stop accepting; give the requests being answered ``grace_s`` (the service, stopped, fails what
        it still holds with 503), then drop every connection."""
        self.stop_accepting()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for conn in list(self.connections):
            conn.stop_reading()  # what each has read is still answered
        end = time.monotonic() + grace_s
        while any(c.task is not None or c.waiting for c in self.connections) and time.monotonic() < end:
            await asyncio.sleep(0.01)
        busy = [c.task for c in self.connections if c.task is not None]
        for task in busy:  # past the grace: these requests go unanswered (the connection is dropped)
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
        for conn in list(self.connections):
            conn.close()  # once its answers are written out
        while self.connections and time.monotonic() < end + grace_s:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort()  # a client that reads nothing would hold a close() forever
        if self.server is not None:  # on 3.12+ this waits for the connections, all gone by now
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), grace_s)

    async def _sweep(self) -> None:
        """Close connections idle for KEEPALIVE_S (a client that keeps them open forever holds no socket)."""
        while True:
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.task is None and not conn.waiting and now - conn.last_active > KEEPALIVE_S:
                    conn.close()

    async def answer(self, req: Request) -> bytes:
        """The response to one request: the predict route's, or its error's (never raises)."""
        try:
            return await self._answer(req)
        except ServingError as exc:
            status, body, headers = handlers.error_response(self.service, exc)
            return response(status, ERROR_TYPE, orjson.dumps(body), req, headers)
        except Exception:  # a bug must still answer this request and keep the others going
            log.exception("predict listener: unexpected error")
            return response(500, ERROR_TYPE, orjson.dumps({"error": "internal error", "code": "internal"}), req)

    async def _answer(self, req: Request) -> bytes:
        """The main port's order of checks: token (its middleware runs first), route, method, media type,
        size; then the route's work."""
        if req.refuse is not None and not req.method:  # not HTTP: nothing else can be judged
            raise req.refuse
        token = self.service.cfg.auth_token
        if token is not None:
            handlers.check_bearer(req.authorization, token)
        path, _, query = req.url.partition(b"?")
        if path != b"/predict":
            raise RouteNotFound(f"no route {path.decode('latin-1')!r} on the predict port: it serves POST /predict")
        if req.method != b"POST":
            raise MethodNotAllowed(f"method {req.method.decode('latin-1')} not allowed on /predict", allow="POST")
        use_msgpack = handlers.body_is_msgpack(req.content_type)
        if req.refuse is not None:
            raise req.refuse
        body, content_type = await handlers.predict_body(self.service, req.body, use_msgpack, _deadline(query))
        return response(200, content_type, body, req)


def _deadline(query: bytes) -> str | None:
    """The first ``deadline_ms`` of the query string, as aiohttp's request.query.get."""
    for key, value in urllib.parse.parse_qsl(query.decode("latin-1")):
        if key == "deadline_ms":
            return value
    return None
