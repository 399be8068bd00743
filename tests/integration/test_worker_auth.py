"""The shared-secret handshake on worker connections: peers with the secret are served; a wrong
secret, a missing one, or a raw unauthenticated peer are refused and never reach the model."""
from __future__ import annotations

import asyncio

import numpy as np

from frontend.config import FrontendConfig
from frontend.worker_client import WorkerClient
from tests.conftest import eventually, frontend, worker_servers
from workers.protocol import FrameDecoder, encode_tensor, pack

SECRET = "0123456789abcdef" * 4


def cfg(ws, secret: str | None) -> FrontendConfig:
    return FrontendConfig(data=(("127.0.0.1", ws[0].port),), mode="none", worker_secret=secret,
                          connect_timeout_s=0.5, health_interval_s=0.1)


async def test_the_right_secret_is_served() -> None:
    async with worker_servers(["builtin:linear"], secret=SECRET) as ws, frontend(cfg(ws, SECRET)) as c:
        resp = await c.post("/predict", json={"inputs": np.zeros((1, 784)).tolist()})
        assert resp.status == 200


async def test_wrong_missing_or_unexpected_secrets_are_refused() -> None:
    async with worker_servers(["builtin:linear"], secret=SECRET) as ws:
        for secret, reason in (("wrong", "closed the connection"), (None, "requires a shared secret")):
            client = WorkerClient("127.0.0.1", ws[0].port, secret=secret, connect_timeout_s=0.5)
            client.start()
            try:
                await eventually(lambda: client.auth_error is not None, timeout=5)
                assert reason in client.auth_error and not client.healthy
            finally:
                await client.close()
        assert ws[0].requests_served == 0
    async with worker_servers(["builtin:linear"]) as ws:  # a worker without a secret cannot prove itself
        client = WorkerClient("127.0.0.1", ws[0].port, secret=SECRET, connect_timeout_s=0.3)
        client.start()
        try:
            await eventually(lambda: client.auth_error is not None, timeout=5)
            assert "no handshake frame" in client.auth_error
        finally:
            await client.close()


async def test_a_raw_peer_skipping_the_handshake_is_cut_off() -> None:
    async with worker_servers(["builtin:linear"], secret=SECRET) as ws:
        reader, writer = await asyncio.open_connection("127.0.0.1", ws[0].port)
        writer.write(pack({"type": "infer", "id": 1, "inputs": encode_tensor(np.zeros((1, 1, 28, 28), np.float32))}))
        await writer.drain()
        frames: list[dict] = []
        decoder = FrameDecoder()
        while data := await asyncio.wait_for(reader.read(65536), 5):
            frames += decoder.feed(data)
        assert [f["type"] for f in frames] == ["hello"]  # greeted, then closed: no result, no error reply
        writer.close()
        assert ws[0].requests_served == 0
