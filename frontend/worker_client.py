"""One persistent, multiplexed TCP connection from the frontend to one worker.

Requests carry ids; a reader task resolves each request's future from the reply with the same
id. When the connection drops, every in-flight request fails at once with WorkerUnavailable and
the client reconnects with exponential backoff. Health (a real-inference probe, not only a ping,
so a worker that answers pings but not traffic is reported unhealthy) lives in WorkerBase.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import numpy as np

from frontend import clock
from frontend.errors import WorkerFailed, WorkerUnavailable
from frontend.worker_base import WorkerBase
from workers import auth
from workers.protocol import DEFAULT_MAX_FRAME, FrameDecoder, ProtocolError, decode_tensor, encode_tensor, pack

log = logging.getLogger(__name__)
READ_CHUNK = 256 * 1024


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
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._sent: dict[int, tuple[float, int, bool]] = {}  # request id -> (sent at, requests ahead, inference)
        self._writer: asyncio.StreamWriter | None = None

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

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        writer = self._writer
        if writer is None or not self.connected:
            raise WorkerUnavailable(f"{self.name}: not connected")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        # The entry stays until the reply arrives or the connection drops, even if the caller
        # gives up (cancelled straggler): the worker still holds it, so it still counts as load.
        self._sent[rid] = (clock.now(), len(self._pending), message.get("type") == "infer")
        self._pending[rid] = fut
        try:
            writer.write(pack({**message, "id": rid}, self.max_frame))
            await writer.drain()  # backpressure: never buffer without bound towards a slow worker
        except OSError as exc:
            self._pending.pop(rid, None)
            self._sent.pop(rid, None)
            raise WorkerUnavailable(f"{self.name}: send failed: {exc}") from exc
        except asyncio.CancelledError:  # while blocked on backpressure: no one will await fut, so a
            fut.cancel()                # dropped connection must not set an exception on it (logged
            raise                       # "never retrieved"); the entry stays, as the request was sent
        reply = await fut
        if reply.get("type") == "error":
            raise WorkerFailed(f"{self.name}: {reply.get('message', 'error')}")
        return reply

    # -- connection management ------------------------------------------------------------

    async def _connection_loop(self) -> None:
        backoff = 0.05
        while not self._closing:
            connected = await self._connect()
            if connected is None:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.05
            reader, writer, decoder, early = connected
            self._writer = writer
            self._mark_connected()
            log.info("%s: connected", self.name)
            try:
                await self._read_loop(reader, decoder, early)
            finally:
                self._drop_connection(WorkerUnavailable(f"{self.name}: connection lost"))
            if not self._closing:
                log.warning("%s: connection lost; reconnecting", self.name)
                if self.auth_error:  # reconnecting at once would only fail the same way
                    await asyncio.sleep(self.max_backoff_s)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, FrameDecoder, list[Any]] | None:
        """Open the connection and, with a secret, pass the worker's handshake; None on failure."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=READ_CHUNK), self.connect_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            log.debug("%s: connect failed: %s", self.name, exc)
            return None
        decoder = FrameDecoder(self.max_frame)
        early: list[Any] = []
        if self.secret is not None:
            try:
                early = await auth.answer(reader, writer, decoder, self.secret, self.connect_timeout_s)
            except (auth.AuthError, OSError) as exc:
                self.auth_error = str(exc)
                log.error("%s: handshake failed: %s", self.name, exc)
                writer.close()
                return None
        self.auth_error = None
        return reader, writer, decoder, early

    async def _read_loop(self, reader: asyncio.StreamReader, decoder: FrameDecoder, early: list[Any]) -> None:
        try:
            self._dispatch_replies(early)
            while data := await reader.read(READ_CHUNK):
                self._dispatch_replies(decoder.feed(data))
        except (OSError, ProtocolError) as exc:  # reset by peer, or a peer speaking garbage
            log.warning("%s: %s", self.name, exc)
        except auth.AuthError as exc:
            self.auth_error = str(exc)
            log.error("%s: %s", self.name, exc)

    def _dispatch_replies(self, messages: list[dict[str, Any]]) -> None:
        for msg in messages:
            if msg.get("type") == "hello":  # a worker with a secret greets: we have none to answer with
                raise auth.AuthError("the worker requires a shared secret (--worker-secret-file or "
                                     f"${auth.ENV})")
            fut = self._pending.pop(msg["id"], None)
            sent = self._sent.pop(msg["id"], None)
            if sent is not None:  # every reply, the abandoned ones too: they are the slow ones
                self._record_reply(*sent)
            if fut is not None and not fut.done():  # done: the caller gave up; drop it
                fut.set_result(msg)

    def _drop_connection(self, exc: Exception) -> None:
        self._mark_disconnected()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
        self._sent.clear()

    async def _probe_once(self) -> bool:
        """Ping for the model's info, then a real inference of zeros."""
        self._set_info(await self.ping())
        shape = self.info.get("input_shape")
        if not isinstance(shape, list):
            return False
        await self.infer(np.zeros([1, *shape], np.float32))
        return True
