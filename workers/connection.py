"""The worker's end of one client connection: its replies, queued as whole frames and written together
at the end of each event-loop turn, and the handler tasks it owns. Used by workers.server.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from workers.protocol import ProtocolError, pack


@dataclass
class Connection:
    """One client connection: replies queued in one loop turn leave in one write (a batch that ran
    answers several requests at once, and one send() then carries them all)."""

    writer: asyncio.StreamWriter
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    control: set[asyncio.Task[None]] = field(default_factory=set)  # of those, ping and fault handlers
    out: list[bytes] = field(default_factory=list)  # replies to write at the end of this loop turn

    def queue(self, message: dict[str, Any], max_frame: int) -> None:
        """Queue a reply; it leaves with the others of this loop turn (whole frames, in order)."""
        try:
            frame = pack(message, max_frame)
        except ProtocolError as exc:  # e.g. outputs too large for one frame
            frame = pack({"type": "error", "id": message["id"], "message": str(exc)}, max_frame)
        if self.writer.is_closing():
            return
        if not self.out:
            asyncio.get_running_loop().call_soon(self._flush)
        self.out.append(frame)

    async def send(self, message: dict[str, Any], max_frame: int) -> None:
        self.queue(message, max_frame)
        await self.drain()

    async def drain(self) -> None:
        async with self.lock:  # one drain at a time
            await self.writer.drain()

    def open(self) -> bool:
        return not self.writer.is_closing()

    def _flush(self) -> None:
        frames, self.out = self.out, []
        if frames and not self.writer.is_closing():
            self.writer.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self.tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass  # the peer vanished first; nothing left to flush
