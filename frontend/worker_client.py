"""One persistent, multiplexed TCP connection from the frontend to one worker.

Requests carry ids; each reply is matched to its request as its bytes arrive (frontend.worker_conn: in
the protocol's data_received, no reader task), and an inference sent with ``send_infer`` is answered
by calling its callback there and then: no task, no future per request. When the connection drops,
every request in flight fails at once with WorkerUnavailable and the client reconnects with
exponential backoff. Health (a real-inference probe, not only a ping, so a worker that answers pings
but not traffic is reported unhealthy) lives in WorkerBase.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import numpy as np

from frontend import clock
from frontend.errors import WorkerError, WorkerFailed, WorkerUnavailable
from frontend.worker_api import InferDone
from frontend.worker_base import WorkerBase
from frontend.worker_conn import Connection
from workers import auth
from workers.protocol import DEFAULT_MAX_FRAME, ProtocolError, decode_tensor, encode_tensor, pack

log = logging.getLogger(__name__)
Reply = dict[str, Any]


class Sent:
    """A request on the wire until its reply or the connection's end. ``on_reply`` is None once its
    caller has abandoned it: the worker still holds it, so it still counts in ``in_flight``."""

    __slots__ = ("ahead", "at", "inference", "on_reply", "raw")

    def __init__(self, at: float, ahead: int, inference: bool, on_reply: Any, raw: bool) -> None:
        self.at, self.ahead, self.inference = at, ahead, inference
        self.on_reply = on_reply  # raw: on_reply(reply, exc); else an InferDone: on_reply(outputs, exc)
        self.raw = raw

    def abandon(self) -> None:
        self.on_reply = None


class WorkerClient(WorkerBase):
    def __init__(self, host: str, port: int, role: str = "data", *, max_frame: int = DEFAULT_MAX_FRAME,
                 connect_timeout_s: float = 2.0, health_interval_s: float = 1.0, health_timeout_s: float = 1.0,
                 max_backoff_s: float = 2.0, secret: str | None = None) -> None:
        super().__init__(role, connect_timeout_s=connect_timeout_s, health_interval_s=health_interval_s,
                         health_timeout_s=health_timeout_s)
        self.host, self.port = host, port
        self.max_frame = max_frame
        self.max_backoff_s = max_backoff_s
        self.secret = secret                    # shared secret for the worker's handshake (workers.auth)
        self._ids = itertools.count(1)
        self._pending: dict[int, Sent] = {}     # request id -> what was sent, until its reply
        self._conn: Connection | None = None

    @property
    def name(self) -> str:
        return f"{self.role}@{self.host}:{self.port}"

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered by the worker (what least-loaded choice reads)."""
        return len(self._pending)

    def _start_transport(self) -> None:
        self._spawn(self._connection_loop())

    async def _close_transport(self) -> None:
        self._drop_connection(WorkerUnavailable(f"{self.name}: client closed"))

    async def _wait_transport(self) -> None:
        await self._connected.wait()

    # -- requests -------------------------------------------------------------------------

    def send_infer(self, inputs: np.ndarray, done: InferDone) -> Sent:
        """Send inputs (B, *S) float32; ``done(outputs (B, C), None)`` or ``done(None, WorkerError)`` is
        called from the connection when the reply comes or the connection drops. Raises
        WorkerUnavailable at once if not connected. ``abandon()`` the result to drop a late reply."""
        return self._send({"type": "infer", "inputs": encode_tensor(inputs)}, done, raw=False)

    async def infer(self, inputs: np.ndarray) -> np.ndarray:
        """inputs (B, *S) float32 -> outputs (B, C). Raises WorkerUnavailable / WorkerFailed."""
        reply = await self.request({"type": "infer", "inputs": encode_tensor(inputs)})
        try:
            outputs = decode_tensor(reply.get("outputs"))
        except ProtocolError as exc:
            raise WorkerFailed(f"{self.name}: bad outputs in reply: {exc}") from exc
        self._record_result()
        return outputs

    async def ping(self) -> dict[str, Any]:
        reply = await self.request({"type": "ping"})
        info = reply.get("info")
        return info if isinstance(info, dict) else {}

    async def set_fault(self, spec: str) -> None:
        await self.request({"type": "fault", "spec": spec})

    async def request(self, message: dict[str, Any]) -> Reply:
        """Send one message and wait for its reply; WorkerFailed for an error reply."""
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        conn = self._conn
        self._send(message, lambda reply, exc: _settle(fut, reply, exc), raw=True)
        try:
            await conn.drain()  # type: ignore[union-attr]  # backpressure: never buffer without bound
        except asyncio.CancelledError:  # while blocked on backpressure: no one will await fut, so a
            fut.cancel()                # dropped connection must not set an exception on it (logged
            raise                       # "never retrieved"); the entry stays, as the request was sent
        reply = await fut
        if reply.get("type") == "error":
            raise WorkerFailed(f"{self.name}: {reply.get('message', 'error')}")
        return reply

    def _send(self, message: dict[str, Any], on_reply: Any, raw: bool) -> Sent:
        conn = self._conn
        if conn is None or not self.connected:
            raise WorkerUnavailable(f"{self.name}: not connected")
        rid = next(self._ids)
        message["id"] = rid
        frame = pack(message, self.max_frame)
        # The entry stays until the reply arrives or the connection drops, even if the caller
        # gives up (abandoned straggler): the worker still holds it, so it still counts as load.
        sent = self._pending[rid] = Sent(clock.now(), len(self._pending), message["type"] == "infer", on_reply, raw)
        conn.write(frame)  # a closed transport drops it; the connection's loss then fails the entry
        return sent

    def _on_messages(self, messages: list[Reply]) -> None:
        """Replies, as the connection cuts them from the stream: each settles its request at once."""
        for msg in messages:
            if msg.get("type") == "hello":  # a worker with a secret greets: we have none to answer with
                raise auth.AuthError("the worker requires a shared secret (--worker-secret-file or "
                                     f"${auth.ENV})")
            sent = self._pending.pop(msg["id"], None)
            if sent is None:
                continue
            self._record_reply(sent.at, sent.ahead, sent.inference)  # abandoned ones too: they are the slow ones
            if sent.on_reply is not None:
                self._deliver(sent, msg)

    def _deliver(self, sent: Sent, msg: Reply) -> None:
        try:
            if sent.raw:
                sent.on_reply(msg, None)
            elif msg.get("type") == "error":
                sent.on_reply(None, WorkerFailed(f"{self.name}: {msg.get('message', 'error')}"))
            else:
                self._deliver_outputs(sent.on_reply, msg)
        except Exception:  # a bug in a caller's callback must not cut the connection the others share
            log.exception("%s: reply callback failed", self.name)

    def _deliver_outputs(self, done: InferDone, msg: Reply) -> None:
        try:
            outputs = decode_tensor(msg.get("outputs"))
        except ProtocolError as exc:
            done(None, WorkerFailed(f"{self.name}: bad outputs in reply: {exc}"))
            return
        self._record_result()
        done(outputs, None)

    # -- connection management ------------------------------------------------------------

    async def _connection_loop(self) -> None:
        backoff = 0.05
        while not self._closing:
            conn = await self._connect()
            if conn is None:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.05
            self._conn = conn
            self._mark_connected()
            log.info("%s: connected", self.name)
            try:
                reason = await asyncio.shield(conn.closed)
            finally:
                self._drop_connection(WorkerUnavailable(f"{self.name}: connection lost"))
            self._note_close_reason(reason)
            if not self._closing:
                log.warning("%s: connection lost; reconnecting", self.name)
                if self.auth_error:  # reconnecting at once would only fail the same way
                    await asyncio.sleep(self.max_backoff_s)

    def _note_close_reason(self, reason: Exception | None) -> None:
        if isinstance(reason, auth.AuthError):
            self.auth_error = str(reason)
            log.error("%s: %s", self.name, reason)
        elif reason is not None:  # reset by peer, or a peer speaking garbage
            log.warning("%s: %s", self.name, reason)

    async def _connect(self) -> Connection | None:
        """Open the connection and, with a secret, pass the worker's handshake; None on failure."""
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: Connection(self.max_frame, self._on_messages), self.host, self.port), self.connect_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            log.debug("%s: connect failed: %s", self.name, exc)
            return None
        try:
            early = []
            if self.secret is not None:
                early = await auth.answer(conn.recv, conn.write, conn.decoder, self.secret, self.connect_timeout_s)
            early += conn.end_handshake()
        except (auth.AuthError, ProtocolError, OSError) as exc:
            self.auth_error = str(exc)
            log.error("%s: handshake failed: %s", self.name, exc)
            conn.fail(exc)
            return None
        self.auth_error = None
        try:
            self._on_messages(early)
        except auth.AuthError as exc:  # a worker with a secret greeted us, and we have none
            conn.fail(exc)
        return conn

    def _drop_connection(self, exc: WorkerError) -> None:
        self._mark_disconnected()
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()
        pending, self._pending = self._pending, {}
        for sent in pending.values():
            if sent.on_reply is not None:
                self._deliver_failure(sent, exc)

    def _deliver_failure(self, sent: Sent, exc: WorkerError) -> None:
        try:
            sent.on_reply(None, exc)
        except Exception:
            log.exception("%s: failure callback failed", self.name)

    async def _probe_once(self) -> bool:
        """Ping for the model's info, then a real inference of zeros."""
        self._set_info(await self.ping())
        shape = self.info.get("input_shape")
        if not isinstance(shape, list):
            return False
        await self.infer(np.zeros([1, *shape], np.float32))
        return True


def _settle(fut: asyncio.Future[Reply], reply: Reply | None, exc: Exception | None) -> None:
    """Resolve an awaited request's future, unless its caller gave up on it."""
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(reply)  # type: ignore[arg-type]
