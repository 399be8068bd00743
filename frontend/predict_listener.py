"""A lean HTTP/1.1 listener for ``POST /predict`` alone (``parm serve --predict-port``): an asyncio
Protocol with httptools' parser (llhttp, as uvicorn uses) in front of the same Service, answering
through the same code as the aiohttp route (frontend.handlers.predict_body, error_response) but
without aiohttp's request objects, routing and middleware: ~55 µs less CPU per answer here
(BENCHMARKS.md). Probes, metrics, stats and V2 stay on the main port, as Triton and TorchServe keep
inference apart from the rest.

Per connection, requests are answered in order, one at a time (pipelined ones wait their turn, and
reading pauses while more than PIPELINE_MAX wait). A body over the limit is refused with 413 as soon
as it is known too large, and the connection closed after it; so is a request that is not HTTP.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import logging
import time
import urllib.parse
from dataclasses import dataclass

import httptools
import orjson

from frontend import handlers
from frontend.errors import BadRequest, MethodNotAllowed, RouteNotFound, ServingError
from frontend.service import Service

log = logging.getLogger(__name__)
PIPELINE_MAX = 16        # requests waiting on one connection before it stops reading
KEEPALIVE_S = 75.0       # an idle connection is closed after this long (aiohttp's default)
SWEEP_S = 5.0            # how often idle connections are looked for
REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed",
           413: b"Payload Too Large", 415: b"Unsupported Media Type", 500: b"Internal Server Error",
           503: b"Service Unavailable", 504: b"Gateway Timeout"}


@dataclass
class Request:
    """One parsed request, or (``refuse`` set) the error to answer instead and then close."""

    method: bytes
    url: bytes
    content_type: str
    authorization: str
    body: bytes
    keep_alive: bool
    refuse: ServingError | None = None


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


def response(status: int, content_type: str, body: bytes, keep_alive: bool,
             headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response."""
    head = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error")), b"Content-Type: " + content_type.encode(),
            b"Content-Length: %d" % len(body), b"Date: " + _DATE.header()]
    if not keep_alive:
        head.append(b"Connection: close")
    head += [f"{k}: {v}".encode("latin-1") for k, v in (headers or {}).items()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class PredictListener:
    """The listening socket and its connections; ``close()`` stops accepting and closes them all."""

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

    async def close(self, grace_s: float = 1.0) -> None:
        """Stop accepting; give requests being answered ``grace_s`` to finish; close every connection."""
        if self.server is not None:
            self.server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        busy = [c.task for c in self.connections if c.task is not None]
        if busy:
            await asyncio.wait(busy, timeout=grace_s)
            for task in busy:  # past the grace (the service has drained by now): stop waiting for them
                task.cancel()
            await asyncio.gather(*busy, return_exceptions=True)
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()

    async def _sweep(self) -> None:
        """Close connections idle for KEEPALIVE_S (a client that keeps them open forever holds no socket)."""
        while True:
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.task is None and now - conn.last_active > KEEPALIVE_S:
                    conn.close()

    async def answer(self, req: Request) -> bytes:
        """The response to one request: the predict route's, or its error's (never raises)."""
        try:
            return await self._answer(req)
        except ServingError as exc:
            status, body, headers = handlers.error_response(self.service, exc)
            return response(status, "application/json", orjson.dumps(body), req.keep_alive, headers)
        except Exception:  # a bug must still answer this request and keep the others going
            log.exception("predict listener: unexpected error")
            body = orjson.dumps({"error": "internal error", "code": "internal"})
            return response(500, "application/json", body, req.keep_alive)

    async def _answer(self, req: Request) -> bytes:
        """The main port's order of checks: route, method, token, media type, size; then the route's work."""
        if req.refuse is not None and not req.method:  # not HTTP: nothing else can be judged
            raise req.refuse
        path, _, query = req.url.partition(b"?")
        if path != b"/predict":
            raise RouteNotFound(f"no route {path.decode('latin-1')!r} on the predict port: it serves POST /predict")
        if req.method != b"POST":
            raise MethodNotAllowed(f"method {req.method.decode('latin-1')} not allowed on /predict", allow="POST")
        token = self.service.cfg.auth_token
        if token is not None:
            handlers.check_bearer(req.authorization, token)
        use_msgpack = handlers.body_is_msgpack(req.content_type)
        if req.refuse is not None:
            raise req.refuse
        deadline = dict(urllib.parse.parse_qsl(query.decode("latin-1"))).get("deadline_ms") if query else None
        body, content_type = await handlers.predict_body(self.service, req.body, use_msgpack, deadline)
        return response(200, content_type, body, req.keep_alive)


class PredictProtocol(asyncio.Protocol):
    """One client connection. httptools calls ``on_*`` as it parses; whole requests queue in ``waiting``
    and one task (``task``, while there is work) answers them in order."""

    def __init__(self, listener: PredictListener) -> None:
        self.listener = listener
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[Request] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.closing = False      # no more requests are read: the last queued one closes the connection
        self.last_active = time.monotonic()
        self._reading_paused = False
        self._begin()

    def _begin(self) -> None:
        self.url, self.content_type, self.authorization = b"", "", ""
        self.parts: list[bytes] = []
        self.size, self.declared, self.expect_continue = 0, 0, False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        self.closing = True  # queries already submitted are still answered; their responses go nowhere

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._refuse_and_close(Request(b"", b"", "", "", b"", False), BadRequest(f"malformed HTTP request: {exc}"))

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading its requests
        self._pause_reading()

    def resume_writing(self) -> None:
        self._resume_reading()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._begin()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":  # the media type alone, as aiohttp's request.content_type
            self.content_type = value.decode("latin-1").partition(";")[0].strip().lower()
        elif name == b"authorization":
            self.authorization = value.decode("latin-1")
        elif name == b"content-length" and value.isdigit():  # llhttp refuses a malformed or conflicting one
            self.declared = int(value)
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True

    def on_headers_complete(self) -> None:
        if self.closing:  # pipelined behind a request that closes the connection: not served
            return
        limit = self.listener.service.cfg.max_body_bytes
        if self.declared > limit:  # refused before its body is read
            self._refuse_and_close(self._request(b""), handlers.too_large(limit))
            return
        if self.expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.closing:
            return
        self.size += len(body)
        limit = self.listener.service.cfg.max_body_bytes
        if self.size > limit:  # a chunked body, or one longer than it said
            self._refuse_and_close(self._request(b""), handlers.too_large(limit))
            return
        self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        req = self._request(b"".join(self.parts))
        if not req.keep_alive:
            self.closing = True
        self._queue(req)

    # -- answering ------------------------------------------------------------------------------

    def _request(self, body: bytes) -> Request:
        return Request(self.parser.get_method(), self.url, self.content_type, self.authorization, body,
                       self.parser.should_keep_alive())

    def _refuse_and_close(self, req: Request, exc: ServingError) -> None:
        """Answer ``exc`` after the requests before it, then close: the rest of the stream is unusable."""
        req.keep_alive, req.refuse, self.closing = False, exc, True
        self._queue(req)
        self._pause_reading()  # nothing more is read from this client

    def _queue(self, req: Request) -> None:
        self.waiting.append(req)
        if len(self.waiting) > PIPELINE_MAX:
            self._pause_reading()
        if self.task is None:
            self.task = asyncio.create_task(self._answer_waiting())

    async def _answer_waiting(self) -> None:
        try:
            while self.waiting:
                req = self.waiting.popleft()
                out = await self.listener.answer(req)
                if self.transport is None or self.transport.is_closing():
                    continue  # the client left: the query was still answered (and counted)
                self.transport.write(out)
                self.last_active = time.monotonic()
                if not req.keep_alive:
                    self.transport.close()
                if len(self.waiting) <= PIPELINE_MAX // 2:
                    self._resume_reading()
        finally:
            self.task = None

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.transport.is_closing():
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.transport.is_closing():
            self._reading_paused = False
            with contextlib.suppress(RuntimeError):  # uvloop: resuming a transport being closed
                self.transport.resume_reading()

