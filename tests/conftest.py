"""Shared fixtures: in-process workers (real servers on port 0) and a frontend under aiohttp's
test server, so integration tests exercise real sockets without starting processes."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from frontend.app import create_app
from frontend.config import FrontendConfig
from frontend.handlers import SERVICE
from frontend.service import Service
from workers.model import load_model
from workers.server import WorkerServer

SLICE = (3000, 1000)  # the first training and test records of Fashion-MNIST the tests use


@asynccontextmanager
async def running(servers: list[Any]) -> AsyncIterator[list[Any]]:
    """Start every server (``start()``), yield them, close them all (``close()``) afterwards."""
    for s in servers:
        await s.start()
    try:
        yield servers
    finally:
        for s in servers:
            await s.close()


def worker_servers(models: list[str], **kw: Any) -> Any:
    """In-process workers on free ports, one per model spec: ``async with worker_servers([...]) as ws``."""
    return running([WorkerServer(load_model(m), "127.0.0.1", 0, **kw) for m in models])


@asynccontextmanager
async def frontend(cfg: FrontendConfig) -> AsyncIterator[TestClient]:
    client = TestClient(TestServer(create_app(cfg, drain_timeout_s=1.0)))
    await client.start_server()
    try:
        await wait_ready(client)
        yield client
    finally:
        service = service_of(client)
        await client.close()
        # the invariant every test ends on: nothing pending, no group left open
        assert service.pending == 0, f"{service.pending} queries still pending"
        assert not service.runs, f"{len(service.runs)} groups still open"


def service_of(client: TestClient) -> Service:
    return client.server.app[SERVICE]


async def wait_ready(client: TestClient, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        resp = await client.get("/ready")
        if resp.status == 200:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"frontend not ready within {timeout}s: {await resp.json()}")


async def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture(scope="session")
def fashion_slice() -> Any:
    """The first 3,000 train and 1,000 test images of real Fashion-MNIST, found by the usual lookup
    (scripts/test.sh installs Debian's dataset-fashion-mnist when none has it): train 2,700, val 300,
    test 1,000, each (1, 28, 28)."""
    from parity_models.data import load_dataset  # torch: only for the tests that train

    return load_dataset("fashion-mnist", download=False, first=SLICE)


@pytest.fixture
def addr() -> Callable[[list[WorkerServer]], tuple[tuple[str, int], ...]]:
    return lambda servers: tuple(("127.0.0.1", s.port) for s in servers)
