"""V2 (Open Inference Protocol) workers: the client against a fake V2 server on a real socket, and
the real frontend serving coded queries through V2 data and parity workers."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from frontend.config import FrontendConfig, parse_v2_address
from frontend.errors import ConfigError, WorkerFailed, WorkerUnavailable
from frontend.v2_worker import V2WorkerClient
from tests.conftest import eventually, frontend, running, service_of, worker_servers
from workers.model import load_model

LINEAR = load_model("builtin:linear")
PARITY = "builtin:linear:parity_k=2"
RNG = np.random.default_rng(1)


def images(n: int) -> np.ndarray:
    return RNG.random((n, 1, 28, 28), dtype=np.float32)


class FakeV2Server:
    """A minimal Open Inference Protocol REST server for one builtin model, with knobs: ``gate``
    (clear it to stall inference), ``error`` (reply 500 with this text), ``garbage`` (200 with a
    body that is not JSON), ``delay_s`` and ``serial`` (one inference at a time, like one GPU: the
    others queue). ``waiting`` counts inference requests received and not yet answered; ``port``
    (0: any free one) lets a restarted server come back where the old one was."""

    def __init__(self, spec: str, model_name: str = "linear", port: int = 0) -> None:
        self.model = load_model(spec)
        self.model_name = model_name
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: str | None = None
        self.garbage = False
        self.delay_s = 0.0
        self.serial = False
        self._serial_lock = asyncio.Lock()
        self.infers = 0
        self.waiting = 0
        self.port = port
        app = web.Application()
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/v2/models/{model}", self.metadata)
        app.router.add_post("/v2/models/{model}/infer", self.infer)
        self.runner = web.AppRunner(app)

    @property
    def address(self) -> str:
        return f"v2+http://127.0.0.1:{self.port}/{self.model_name}"

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        self.gate.set()  # let stalled handlers finish
        await self.runner.cleanup()

    def _check_model(self, request: web.Request) -> None:
        if request.match_info["model"] != self.model_name:
            raise web.HTTPNotFound(text='{"error": "Model not found"}', content_type="application/json")

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def metadata(self, request: web.Request) -> web.Response:
        self._check_model(request)
        info = self.model.info
        return web.json_response({
            "name": self.model_name, "platform": "fake", "versions": ["1"],
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, *self.model.input_shape]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, self.model.num_classes]}],
            "parameters": {"model_id": info["model_id"], "kind": info["kind"], "meta": info["meta"]}})

    async def infer(self, request: web.Request) -> web.Response:
        self._check_model(request)
        body = await request.json()
        self.waiting += 1
        try:
            await self.gate.wait()
            if self.serial:
                async with self._serial_lock:
                    await asyncio.sleep(self.delay_s)
            else:
                await asyncio.sleep(self.delay_s)
        finally:
            self.waiting -= 1
        self.infers += 1
        if self.error is not None:
            return web.json_response({"error": self.error}, status=500)
        if self.garbage:
            return web.Response(text="<html>oops</html>", content_type="application/json")
        (tensor,) = body["inputs"]
        assert tensor["name"] == "images" and tensor["datatype"] == "FP32", tensor
        x = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
        y = self.model.predict(x)
        return web.json_response({"model_name": self.model_name, "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}]})


def v2_servers(specs: list[str]) -> Any:
    """Fake V2 servers on free ports: ``async with v2_servers([...]) as servers``."""
    return running([FakeV2Server(s) for s in specs])


@asynccontextmanager
async def client_for(address: str, **kw: Any) -> AsyncIterator[V2WorkerClient]:
    opts = {"health_interval_s": 0.05, "health_timeout_s": 0.5, "connect_timeout_s": 0.5} | kw
    client = V2WorkerClient(address, "data", **opts)
    client.start()
    try:
        yield client
    finally:
        await client.close()
        assert not client._tasks  # every task cancelled and awaited


def coded_cfg(data: tuple[Any, ...], parity: tuple[Any, ...], **kw: Any) -> FrontendConfig:
    base = dict(k=2, code="sum", mode="coded", deadline_ms=3000, health_interval_s=5.0)
    return FrontendConfig(data=data, parity=parity, **(base | kw))


# -- the client ---------------------------------------------------------------------------------

def test_address_parsing() -> None:
    assert parse_v2_address("v2+http://10.0.0.5:8000/mnist") == ("10.0.0.5", 8000, "mnist")
    for bad in ("v2+http://host/m", "v2+http://host:80/", "v2+http://host:80/a/b", "host:80"):
        with pytest.raises(ConfigError):
            parse_v2_address(bad)


async def test_client_reads_metadata_probes_and_infers() -> None:
    async with v2_servers(["builtin:linear"]) as (srv,), client_for(srv.address) as c:
        assert await c.wait_connected(5.0)
        await eventually(lambda: c.healthy)
        assert c.info["name"] == "linear" and c.info["input_shape"] == [1, 28, 28]
        assert c.info["model_id"] == LINEAR.info["model_id"] and c.info["input_name"] == "images"
        x = images(3)
        out = await c.infer(x)
        assert out.dtype == np.float32 and out.shape == (3, 10)
        np.testing.assert_array_equal(out, LINEAR.predict(x))  # float32 survives JSON exactly
        assert c.in_flight == 0 and c.answered >= 4 and c.latency_sum > 0 and c.name == f"data@127.0.0.1:{srv.port}/linear"
        with pytest.raises(WorkerFailed, match="do not support fault injection"):
            await c.set_fault("stall")


async def test_server_errors_and_garbage_are_worker_failed() -> None:
    async with v2_servers(["builtin:linear"]) as (srv,), client_for(srv.address) as c:
        await eventually(lambda: c.healthy)
        srv.error = "model exploded"
        with pytest.raises(WorkerFailed, match="HTTP 500: model exploded"):
            await c.infer(images(1))
        srv.error, srv.garbage = None, True
        with pytest.raises(WorkerFailed, match="malformed JSON"):
            await c.infer(images(1))
        assert c.connected  # the server answered: only the request failed
        await eventually(lambda: not c.healthy)  # and the inference probe notices
    async with v2_servers(["builtin:linear"]) as (srv,), client_for(srv.address.replace("/linear", "/nope")) as c:
        with pytest.raises(WorkerFailed, match="HTTP 404: Model not found"):
            await c.infer(images(1))


async def test_unreachable_server_is_worker_unavailable() -> None:
    async with v2_servers(["builtin:linear"]) as (srv,):
        address = srv.address
    async with client_for(address) as c:  # the port is closed now
        assert not await c.wait_connected(0.3)
        with pytest.raises(WorkerUnavailable):
            await c.infer(images(1))
        assert not c.connected and not c.healthy


async def test_server_answering_health_but_not_inference_is_unhealthy() -> None:
    async with v2_servers(["builtin:linear"]) as (srv,):
        srv.gate.clear()
        async with client_for(srv.address, health_timeout_s=0.2) as c:
            assert await c.wait_connected(5.0)
            await asyncio.sleep(0.5)
            assert c.connected and not c.probe_ok and not c.healthy
            srv.gate.set()
            await eventually(lambda: c.healthy)


# -- through the frontend ------------------------------------------------------------------------

async def test_coded_queries_through_v2_workers_are_answered_exactly() -> None:
    async with v2_servers(["builtin:linear"] * 2 + [PARITY]) as srv:
        srv[2].delay_s = 0.3  # the parity output loses every race: nothing decoded
        async with frontend(coded_cfg((srv[0].address, srv[1].address), (srv[2].address,))) as c:
            await eventually(lambda: service_of(c).readiness()["coded"])
            ready = await (await c.get("/ready")).json()
            assert ready["healthy_data_workers"] == 2 and ready["healthy_parity_workers"] == 1, ready
            assert ready["workers"]["data"][0]["model"] == "linear"
            x = images(6)
            resp = await c.post("/predict", json={"inputs": x.tolist()})
            body = await resp.json()
            assert resp.status == 200, body
            assert body["degraded"] == [False] * 6
            np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-5, atol=1e-5)
            assert service_of(c).stats.groups_coded == 3


async def test_stalled_v2_data_worker_is_decoded_from_parity() -> None:
    async with v2_servers(["builtin:linear"] * 2 + [PARITY]) as srv:
        async with frontend(coded_cfg((srv[0].address, srv[1].address), (srv[2].address,))) as c:
            await eventually(lambda: service_of(c).readiness()["coded"])
            srv[1].gate.clear()
            x = images(8)
            resp = await c.post("/predict", json={"inputs": x.tolist()})
            body = await resp.json()
            assert resp.status == 200, body
            assert sum(body["degraded"]) == 4  # one query of each of the 4 groups sat on the stalled worker
            # sum code + linear parity model: F_P(x1 + x2) - F(x_other) == F(x_i), exact up to rounding
            np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-4, atol=1e-4)
            stats = service_of(c).stats
            assert stats.degraded == 4 and stats.groups_coded == 4
            srv[1].gate.set()


async def test_v2_server_errors_are_retried_on_the_other_worker() -> None:
    async with v2_servers(["builtin:linear"] * 2 + [PARITY]) as srv:
        srv[2].delay_s = 0.3
        async with frontend(coded_cfg((srv[0].address, srv[1].address), (srv[2].address,))) as c:
            srv[0].error = "CUDA out of memory"
            x = images(6)
            resp = await c.post("/predict", json={"inputs": x.tolist()})
            body = await resp.json()
            assert resp.status == 200, body
            assert body["degraded"] == [False] * 6  # re-sent to the healthy worker before the parity won
            np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-5, atol=1e-5)
            assert service_of(c).stats.worker_errors >= 1


async def test_mixed_native_and_v2_workers(addr) -> None:
    async with worker_servers(["builtin:linear", PARITY]) as ws, v2_servers(["builtin:linear", PARITY]) as srv:
        data = (addr(ws[:1])[0], srv[0].address)
        parity = (addr(ws[1:])[0], srv[1].address)
        async with frontend(coded_cfg(data, parity)) as c:
            await eventually(lambda: service_of(c).readiness()["healthy_parity_workers"] == 2)
            ready = service_of(c).readiness()
            assert ready["healthy_data_workers"] == 2, ready
            assert not [w for w in service_of(c).pool.all if w.refused], ready["workers"]
            infers_before = srv[0].infers
            ws[0].faults.set("stall")  # the native data worker stalls: its queries come from parity
            x = images(8)
            resp = await c.post("/predict", json={"inputs": x.tolist()})
            body = await resp.json()
            assert resp.status == 200, body
            np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-4, atol=1e-4)
            assert sum(body["degraded"]) == 4 and srv[0].infers - infers_before >= 4
            ws[0].faults.set("none")
