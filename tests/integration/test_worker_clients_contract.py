"""One contract for both worker clients: the same health and load rules, run against a native
in-process worker (WorkerClient) and a V2 server (V2WorkerClient) on real sockets."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import numpy as np
import pytest

from frontend.v2_worker import V2WorkerClient
from frontend.worker_client import WorkerClient
from tests.conftest import eventually
from tests.integration.test_v2_worker import FakeV2Server
from workers.model import load_model
from workers.server import WorkerServer

LINEAR = "builtin:linear"
X = np.zeros((1, 1, 28, 28), np.float32)


class Backend(Protocol):
    """A worker the contract drives: stall/heal it, stop and restart it on the same port, and see
    how many inference requests it holds unanswered."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def client(self, **opts: Any) -> Any: ...
    def stall(self) -> None: ...
    def heal(self) -> None: ...
    @property
    def held(self) -> int: ...


class NativeBackend:
    def __init__(self, service_ms: float = 0.0) -> None:
        # max_batch=1 with a per-batch service time: requests queue one behind another
        self.spec = f"{LINEAR}:sleep_ms={service_ms:g}"
        self.max_batch = 1 if service_ms else 32
        self.server: WorkerServer | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = WorkerServer(load_model(self.spec), "127.0.0.1", self.port, max_batch=self.max_batch)
        await self.server.start()
        self.port = self.server.port

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.close()

    def client(self, **opts: Any) -> WorkerClient:
        return WorkerClient("127.0.0.1", self.port, "data", max_backoff_s=0.1, **opts)

    def stall(self) -> None:
        assert self.server is not None
        self.server.faults.set("stall")

    def heal(self) -> None:
        assert self.server is not None
        self.server.faults.set("none")

    @property
    def held(self) -> int:
        assert self.server is not None
        return self.server.in_flight


class V2Backend:
    def __init__(self, service_ms: float = 0.0) -> None:
        self.service_s = service_ms / 1000
        self.server: FakeV2Server | None = None
        self.port = 0
        self._stalled = False

    async def start(self) -> None:
        self.server = FakeV2Server(LINEAR, port=self.port)
        self.server.serial, self.server.delay_s = True, self.service_s
        if self._stalled:
            self.server.gate.clear()
        await self.server.start()
        self.port = self.server.port

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.close()

    def client(self, **opts: Any) -> V2WorkerClient:
        return V2WorkerClient(f"v2+http://127.0.0.1:{self.port}/linear", "data", **opts)

    def stall(self) -> None:
        assert self.server is not None
        self._stalled = True
        self.server.gate.clear()

    def heal(self) -> None:
        assert self.server is not None
        self._stalled = False
        self.server.gate.set()

    @property
    def held(self) -> int:
        assert self.server is not None
        return self.server.waiting


KINDS: dict[str, Callable[..., Backend]] = {"native": NativeBackend, "v2": V2Backend}


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def worker(kind: str, service_ms: float = 0.0, **opts: Any) -> AsyncIterator[tuple[Backend, Any]]:
    """A started backend of ``kind`` and a started client for it, healthy; both closed after."""
    backend = KINDS[kind](service_ms)
    await backend.start()
    client = backend.client(**({"health_interval_s": 0.05, "health_timeout_s": 0.5, "connect_timeout_s": 0.5}
                               | opts))
    client.start()
    try:
        await eventually(lambda: client.healthy)
        yield backend, client
    finally:
        backend.heal()
        await client.close()
        assert not client._tasks  # every task it started was cancelled and awaited
        await backend.stop()


async def sample(seconds: float, read: Callable[[], Any], every: float = 0.01) -> list[Any]:
    """``read()`` every ``every`` seconds for ``seconds``."""
    values = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        values.append(read())
        await asyncio.sleep(every)
    return values


async def test_a_busy_worker_that_keeps_answering_stays_healthy(kind: str) -> None:
    # 8 queued requests of 150 ms: every probe waits behind them past its 0.3 s timeout, but
    # results keep arriving, so the worker is busy, not dead
    async with worker(kind, service_ms=150, health_timeout_s=0.3) as (_backend, client):
        burst = [asyncio.ensure_future(client.infer(X)) for _ in range(8)]
        health = await sample(1.0, lambda: client.healthy)
        outputs = await asyncio.gather(*burst)
        assert all(health), f"left rotation while answering: {health.count(False)} of {len(health)} samples"
        assert [o.shape for o in outputs] == [(1, 10)] * 8


async def test_a_stalled_worker_leaves_rotation_with_one_probe_outstanding(kind: str) -> None:
    async with worker(kind, health_interval_s=0.02, health_timeout_s=0.1) as (backend, client):
        backend.stall()
        await eventually(lambda: not client.healthy)
        # 1 s is ~40 health intervals: a probe each would pile up ~40 stalled inferences on both sides
        held = await sample(1.0, lambda: (backend.held, client.in_flight))
        assert max(h for h, _ in held) == 1 and max(f for _, f in held) == 1, held[-5:]
        assert not client.healthy
        backend.heal()
        await eventually(lambda: client.healthy)
        await eventually(lambda: backend.held == 0 and client.in_flight == 0)


async def test_an_abandoned_request_counts_as_load_until_the_worker_answers_it(kind: str) -> None:
    # a long interval: after the first probe no other request reaches the worker
    async with worker(kind, health_interval_s=30.0) as (backend, client):
        await eventually(lambda: client.in_flight == 0)
        backend.stall()
        request = asyncio.ensure_future(client.infer(X))
        await eventually(lambda: backend.held == 1 and client.in_flight == 1)
        request.cancel()  # the caller gives up (a straggler decoded around); the worker still holds it
        with contextlib.suppress(asyncio.CancelledError):
            await request
        assert set(await sample(0.2, lambda: client.in_flight)) == {1}
        backend.heal()
        await eventually(lambda: backend.held == 0 and client.in_flight == 0)


async def test_a_restarted_worker_returns_to_rotation(kind: str) -> None:
    async with worker(kind, health_interval_s=0.05, health_timeout_s=0.3) as (backend, client):
        await backend.stop()
        await eventually(lambda: not client.healthy)
        await backend.start()  # the same port
        await eventually(lambda: client.healthy)
        assert (await client.infer(X)).shape == (1, 10)
        backend.stall()
        await eventually(lambda: not client.healthy)
        backend.heal()
        await eventually(lambda: client.healthy)
