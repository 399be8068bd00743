"""frontend.worker_conn and the callback side of frontend.worker_client, without sockets: frames cut
at any point reach the client whole and in order, garbage closes the connection with its reason,
the frames of one loop turn leave in one write, and a reply callback that raises costs nothing else."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from frontend.errors import WorkerFailed, WorkerUnavailable
from frontend.worker_client import Sent, WorkerClient
from frontend.worker_conn import Connection
from workers.protocol import ProtocolError, encode_tensor, pack


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def connected(on_messages: Any) -> tuple[Connection, FakeTransport]:
    conn, transport = Connection(1 << 20, on_messages), FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def test_frames_cut_anywhere_arrive_whole_and_in_order_after_the_handshake() -> None:
    got: list[dict[str, Any]] = []
    conn, _ = connected(got.extend)
    stream = b"".join(pack({"type": "result", "id": i}) for i in range(1, 6))
    conn.data_received(stream[:7])  # still in the handshake: queued raw, not decoded
    assert got == [] and await conn.recv() == stream[:7]
    assert conn.decoder.feed(stream[:7]) == []  # what the handshake reads goes through the same decoder
    conn.data_received(stream[7:13])  # arrives after the handshake's last read
    assert [m["id"] for m in conn.end_handshake()] == []  # 13 bytes: not even the first frame whole
    for i in range(13, len(stream), 5):
        conn.data_received(stream[i:i + 5])
    assert [m["id"] for m in got] == [1, 2, 3, 4, 5]


async def test_frames_that_arrived_during_the_handshake_are_handed_over() -> None:
    conn, _ = connected(lambda _m: None)
    conn.data_received(pack({"type": "result", "id": 7}) + pack({"type": "pong", "id": 8})[:3])
    assert [m["id"] for m in conn.end_handshake()] == [7]  # the partial second frame stays buffered


async def test_garbage_closes_the_connection_with_its_reason() -> None:
    conn, transport = connected(lambda _m: None)
    conn.end_handshake()
    conn.data_received(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # a whole frame of bytes msgpack never uses
    assert transport.closed and isinstance(conn.closed.result(), ProtocolError)


async def test_frames_of_one_loop_turn_leave_in_one_write() -> None:
    conn, transport = connected(lambda _m: None)
    for i in range(3):
        conn.write(f"frame{i}".encode())
    assert transport.writes == []  # not yet: more may come in this turn
    await asyncio.sleep(0)
    assert transport.writes == [b"frame0frame1frame2"]
    conn.write(b"late")
    transport.closed = True  # the connection went away meanwhile: dropped, its requests fail on loss
    await asyncio.sleep(0)
    assert transport.writes == [b"frame0frame1frame2"]


async def test_a_lost_connection_ends_the_handshake_and_wakes_a_writer() -> None:
    conn, _ = connected(lambda _m: None)
    conn.pause_writing()
    drain = asyncio.ensure_future(conn.drain())
    await asyncio.sleep(0)
    assert not drain.done()
    conn.connection_lost(None)
    await asyncio.wait_for(drain, 1.0)
    assert await conn.recv() == b"" and conn.closed.result() is None


def _client_with(entries: dict[int, Sent]) -> WorkerClient:
    client = WorkerClient("127.0.0.1", 1)
    client._pending.update(entries)
    return client


async def test_a_reply_settles_its_request_from_the_connection_and_a_raising_callback_costs_nothing_else(
        caplog: pytest.LogCaptureFixture) -> None:
    now = asyncio.get_running_loop().time()
    seen: list[Any] = []

    def boom(_out: Any, _exc: Any) -> None:
        raise RuntimeError("a bug in a caller")
    client = _client_with({1: Sent(now, 0, True, boom, raw=False),
                           2: Sent(now, 0, True, lambda out, exc: seen.append((out, exc)), raw=False),
                           3: Sent(now, 0, True, lambda out, exc: seen.append((out, exc)), raw=False)})
    out = encode_tensor(np.ones((1, 10), np.float32))
    with caplog.at_level(logging.ERROR):
        client._on_messages([{"type": "result", "id": 1, "outputs": out}, {"type": "result", "id": 2, "outputs": out},
                             {"type": "error", "id": 3, "message": "model failed"}])
    assert "reply callback failed" in caplog.text
    assert seen[0][1] is None and seen[0][0].shape == (1, 10)
    assert seen[1][0] is None and isinstance(seen[1][1], WorkerFailed) and "model failed" in str(seen[1][1])
    assert client.in_flight == 0 and client.answered == 3


async def test_a_dropped_connection_fails_each_live_request_once_and_skips_abandoned_ones() -> None:
    now = asyncio.get_running_loop().time()
    failed: list[int] = []
    live = Sent(now, 0, True, lambda _o, exc: failed.append(1) if isinstance(exc, WorkerUnavailable) else None, raw=False)
    gone = Sent(now, 1, True, lambda _o, _e: failed.append(2), raw=False)
    gone.abandon()
    client = _client_with({1: live, 2: gone})
    client._drop_connection(WorkerUnavailable("connection lost"))
    client._drop_connection(WorkerUnavailable("connection lost"))  # a second drop finds nothing left
    assert failed == [1] and client.in_flight == 0 and not client.connected


async def test_send_infer_refuses_at_once_when_not_connected() -> None:
    with pytest.raises(WorkerUnavailable):
        WorkerClient("127.0.0.1", 1).send_infer(np.zeros((1, 2), np.float32), lambda _o, _e: None)
