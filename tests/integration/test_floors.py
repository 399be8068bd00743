"""The two HTTP floors benchmarks/frontend_bench.py measures `parm serve` against answer alike: the same
tensor for msgpack and JSON bodies, over one keep-alive connection, as real processes on real sockets."""
from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgpack
import numpy as np
import pytest

from workers.cluster import free_port
from workers.protocol import decode_tensor, encode_tensor

ROOT = Path(__file__).resolve().parents[2]
INPUTS = np.zeros((1, 1, 28, 28), np.float32)
pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def started(script: str, timeout_s: float = 60.0) -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "benchmarks" / script), "--port", str(port),
                                                stderr=asyncio.subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            end = asyncio.get_running_loop().time() + timeout_s
            while True:
                if proc.returncode is not None:
                    err = await proc.stderr.read() if proc.stderr is not None else b""
                    pytest.fail(f"{script} exited with status {proc.returncode}: {err.decode()[-2000:]}")
                try:
                    async with session.get(f"{url}/ready") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                if asyncio.get_running_loop().time() > end:
                    pytest.fail(f"{script} not answering after {timeout_s:g} s")
                await asyncio.sleep(0.1)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


@pytest.fixture(params=["aiohttp_floor.py", "protocol_floor.py"])
async def floor(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    async with started(request.param) as url:
        yield url


async def test_a_floor_answers_msgpack_and_json_on_one_kept_alive_connection(floor: str) -> None:
    opened: list[object] = []
    trace = aiohttp.TraceConfig()

    async def on_create(_session: object, _ctx: object, params: object) -> None:
        opened.append(params)

    trace.on_connection_create_end.append(on_create)
    body = msgpack.packb({"inputs": encode_tensor(INPUTS)})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace]) as session:
        for _ in range(3):
            async with session.post(f"{floor}/predict", data=body,
                                    headers={"Content-Type": "application/msgpack"}) as resp:
                assert resp.status == 200
                out = decode_tensor(msgpack.unpackb(await resp.read())["outputs"])
                assert out.shape == (1, 10)
            async with session.post(f"{floor}/predict?from=test", json={"inputs": INPUTS.tolist()}) as resp:
                assert resp.status == 200
                assert np.asarray((await resp.json(content_type=None))["outputs"]).shape == (1, 10)
        async with session.get(f"{floor}/nowhere") as resp:
            assert resp.status in (404, 405)
    assert len(opened) == 1  # all seven requests on one connection: the floor kept it alive
