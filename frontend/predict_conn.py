"""One client connection of the lean predict listener (frontend.predict_listener): httptools parses the
stream into Requests, which queue and are answered one at a time, in order, by one task per burst.

Bounded by construction: a request's head (request line and headers) may not exceed MAX_HEAD_BYTES,
its body max_body_bytes; reading pauses while more than PIPELINE_MAX requests wait or while the
client does not read its answers. After a refusal that ends the connection (a body too large,
bytes that are not HTTP, an upgrade), the answer goes out with a FIN and what the client still
sends is read and dropped for LINGER_S, so it sees the answer rather than a reset.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httptools

from frontend import handlers
from frontend.errors import BadRequest, ServingError

if TYPE_CHECKING:
    from frontend.predict_listener import PredictListener

log = logging.getLogger(__name__)
PIPELINE_MAX = 16            # requests waiting on one connection before it stops reading
MAX_HEAD_BYTES = 1 << 20     # a request line and headers past this (plus at most one read) are refused
LINGER_S = 2.0               # after a refusal, how long the rest of the client's upload is read and dropped


@dataclass
class Request:
    """One parsed request, or (``refuse`` set) the error to answer instead, after which the connection ends."""

    method: bytes
    url: bytes
    content_type: str
    authorization: str
    body: bytes
    keep_alive: bool
    refuse: ServingError | None = None


class PredictProtocol(asyncio.Protocol):
    """httptools calls ``on_*`` as it parses; whole requests queue in ``waiting``, and ``task`` (while there is
    work) answers them in order through the listener."""

    def __init__(self, listener: PredictListener) -> None:
        self.listener = listener
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[Request] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.closing = False   # nothing more is parsed: the last queued request ends the connection
        self.last_active = time.monotonic()
        self._write_paused = self._reading_paused = False
        self._in_head, self._head_bytes = True, 0  # in a request's head; its bytes that are not body so far
        self._body_total = 0                         # body bytes ever parsed on this connection
        self._eof = self._lost = False
        self._begin()

    def _begin(self) -> None:
        self.url_parts: list[bytes] = []
        self.content_type: str | None = None
        self.authorization = ""
        self.parts: list[bytes] = []
        self.size, self.declared, self.expect_continue = 0, 0, False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        self.closing = self._lost = True
        self.waiting.clear()  # not started, and no one to answer: the one being answered still finishes

    def eof_received(self) -> bool:
        """The client has sent all it will (a half-close): answer what it sent, then close."""
        self._eof = self.closing = True
        return self.task is not None or bool(self.waiting)  # True keeps the transport open for the answers

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # after a refusal: the rest of the upload is dropped (LINGER_S)
        self.last_active = time.monotonic()
        body_before = self._body_total
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self.closing:  # (an upgrade was already refused at its headers)
                self._refuse(BadRequest(f"malformed HTTP request: {exc}"), known=False)
            return
        # what was not body: request lines, headers, chunk framing, trailers, blank lines (counted from the
        # current request's start, give or take the one read in which it began)
        self._head_bytes += len(data) - (self._body_total - body_before)
        if self._head_bytes > MAX_HEAD_BYTES and not self.closing:
            self._refuse(BadRequest(f"request line and headers over {MAX_HEAD_BYTES} bytes"), known=False)

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading its requests
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def stop_reading(self) -> None:
        """No more requests from this client (shutdown): the ones already read are still answered."""
        self.closing = True
        self._update_reading(force_pause=True)

    def close(self) -> None:
        """Close once the answers are written out, or after LINGER_S if the client does not read them."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()
            asyncio.get_running_loop().call_later(LINGER_S, self._abort_if_open)

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def _abort_if_open(self) -> None:
        if not self._lost:
            self.abort()

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._begin()
        self._in_head, self._head_bytes = True, 0

    def on_url(self, url: bytes) -> None:
        self.url_parts.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:  # a chunked body's trailer: not a header of the request (as aiohttp)
            return
        name = name.lower()  # the first of repeated headers counts, as aiohttp's request.headers.get
        if name == b"content-type" and self.content_type is None:  # the media type alone, as aiohttp's
            self.content_type = value.decode("latin-1").partition(";")[0].strip().lower()
        elif name == b"authorization" and not self.authorization:
            self.authorization = value.decode("latin-1")
        elif name == b"content-length" and value.isdigit():  # llhttp refuses a malformed or repeated one
            self.declared = int(value)
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self.closing:  # pipelined behind a request that ends the connection: not served
            return
        limit = self.listener.service.cfg.max_body_bytes
        if self.parser.should_upgrade():  # CONNECT, or Upgrade: this listener speaks HTTP/1.1 only
            self._refuse(BadRequest("protocol upgrades and CONNECT are not supported on the predict port"))
        elif self.declared > limit:  # refused before its body is read
            self._refuse(handlers.too_large(limit))
        elif (self.expect_continue and self.task is None and not self.waiting and self.transport is not None
              and self.parser.get_http_version() == "1.1"):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_total += len(body)
        if self.closing:
            return
        self.size += len(body)
        limit = self.listener.service.cfg.max_body_bytes
        if self.size > limit:  # a chunked body, or one longer than it said
            self._refuse(handlers.too_large(limit))
            return
        self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        req = self._request(b"".join(self.parts))
        self.closing = not req.keep_alive
        self._queue(req)

    # -- answering ------------------------------------------------------------------------------

    def _request(self, body: bytes) -> Request:
        # no media type reads as aiohttp's default, so the 415 says the same on both ports
        return Request(self.parser.get_method(), b"".join(self.url_parts),
                       self.content_type or "application/octet-stream", self.authorization, body,
                       self.parser.should_keep_alive())

    def _refuse(self, exc: ServingError, known: bool = True) -> None:
        """Answer ``exc`` after the requests before it, then end the connection: the rest of the stream is
        unusable. ``known=False``: the request's head was not understood (no method, path or headers)."""
        req = self._request(b"") if known else Request(b"", b"", "", "", b"", False)
        req.keep_alive, req.refuse, self.closing = False, exc, True
        self._queue(req)

    def _queue(self, req: Request) -> None:
        self.waiting.append(req)
        self._update_reading()
        if self.task is None:
            self.task = asyncio.create_task(self._answer_waiting())

    async def _answer_waiting(self) -> None:
        try:
            while self.waiting:
                req = self.waiting.popleft()
                self._update_reading()
                out = await self.listener.answer(req)
                transport = self.transport
                if transport is None or transport.is_closing():
                    continue  # the client left: its query was still answered (and counted)
                transport.write(out)
                self.last_active = time.monotonic()
                if req.refuse is not None:
                    self._linger(transport)
                elif not req.keep_alive:
                    self.close()
            if self._eof:  # the client half-closed: all it sent is answered
                self.close()
        except Exception:  # a bug: the answers behind it cannot be given in order, so end here
            log.exception("predict listener: a connection failed")
            self.waiting.clear()
            self.abort()
        finally:
            self.task = None

    def _linger(self, transport: asyncio.Transport) -> None:
        """Send the refusal with a FIN, keep reading (and dropping) what the client still sends for a
        while, then close: closing at once with unread input would reset the connection, answer and all."""
        if transport.can_write_eof():
            transport.write_eof()
        self._write_paused = False
        self._update_reading(force_resume=True)
        asyncio.get_running_loop().call_later(LINGER_S, self.close)

    def _update_reading(self, force_resume: bool = False, force_pause: bool = False) -> None:
        """Pause reading while the client does not read its answers or too many of its requests wait."""
        pause = force_pause or (not force_resume and (self._write_paused or len(self.waiting) > PIPELINE_MAX))
        transport = self.transport
        if pause == self._reading_paused or transport is None or transport.is_closing():
            return
        self._reading_paused = pause
        with contextlib.suppress(RuntimeError):  # uvloop: a transport being closed
            transport.pause_reading() if pause else transport.resume_reading()
