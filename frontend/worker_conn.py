"""The frontend's end of one worker connection, as an asyncio Protocol: bytes in are cut into frames
and handed to the client in ``data_received`` (no reader task, no future woken per reply); frames out
are gathered for the rest of the event loop's turn and written together, one send() for all the
requests that became ready at once (under load, several per turn). Used by frontend.worker_client.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from workers import auth
from workers.protocol import FrameDecoder, ProtocolError


class Connection(asyncio.Protocol):
    """Until ``end_handshake`` the raw bytes queue up for the handshake (``recv``); after it every whole
    frame goes to ``on_messages``. A peer speaking garbage, or ``on_messages`` raising ProtocolError or
    AuthError, closes the connection; ``closed`` then holds why (None: the peer closed it)."""

    def __init__(self, max_frame: int, on_messages: Callable[[list[dict[str, Any]]], None]) -> None:
        self.decoder = FrameDecoder(max_frame)
        self.on_messages = on_messages
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[Exception | None] = loop.create_future()
        self._handshake: asyncio.Queue[bytes] | None = asyncio.Queue()
        self._loop = loop
        self._out: list[bytes] = []  # frames to write at the end of this loop turn
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            self._handshake.put_nowait(data)
            return
        try:
            self.on_messages(self.decoder.feed(data))
        except (ProtocolError, auth.AuthError) as exc:
            self.fail(exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport: the worker will send nothing more

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake is not None:
            self._handshake.put_nowait(b"")  # the handshake reads end of stream
        if not self.closed.done():
            self.closed.set_result(exc)
        self._wake_writers()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writers()

    # -- used by the client ---------------------------------------------------------------------

    def fail(self, exc: Exception) -> None:
        """Close the connection because of ``exc`` (recorded as the reason in ``closed``)."""
        if not self.closed.done():
            self.closed.set_result(exc)
        if self.transport is not None:
            self.transport.close()

    def write(self, frame: bytes) -> None:
        """Queue ``frame``; it leaves with the others queued in this loop turn (a send() is the costliest
        step of a request here: on loopback it runs the receiver's TCP path too)."""
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(frame)

    def _flush(self) -> None:
        frames, self._out = self._out, []
        if frames and self.transport is not None and not self.transport.is_closing():
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def drain(self) -> None:
        """Return once the transport's write buffer is below its high-water mark (or it closed)."""
        while self._paused and not self.closed.done():
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)

    def _wake_writers(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def recv(self) -> bytes:
        """The next raw bytes during the handshake; b"" once the connection has closed."""
        assert self._handshake is not None, "recv is for the handshake only"
        return await self._handshake.get()

    def end_handshake(self) -> list[dict[str, Any]]:
        """From now on frames go to ``on_messages``; returns the frames already here (bytes that arrived
        after the handshake's last read included). Raises ProtocolError on garbage."""
        queue, self._handshake = self._handshake, None
        rest = b""
        while queue is not None and not queue.empty():
            rest += queue.get_nowait()
        return self.decoder.feed(rest) if rest else []
