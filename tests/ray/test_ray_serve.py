"""End to end on Ray Serve: a local two-node Ray cluster (ray.cluster_utils), the application of
rayserve.app:build, real HTTP through Serve's proxy. A stalled replica's queries come back
decoded (exactly, with the builtin linear pair), a killed replica is replaced by Ray while every
query is answered, and equal resources run on Ray's own router.
Run by scripts/test.sh in .venv-ray (scripts/setup_ray.sh); skipped where Ray is not installed."""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: scripts/setup_ray.sh, then .venv-ray runs these")
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from frontend.errors import BadRequest  # noqa: E402
from rayserve.app import build  # noqa: E402
from rayserve.faults import POLL_S, board  # noqa: E402
from workers.model import load_model  # noqa: E402

pytestmark = pytest.mark.e2e
LINEAR = load_model("builtin:linear")
FRONTEND = {"health_interval_s": 0.2, "health_timeout_s": 0.5, "deadline_ms": 10_000}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def serve_url() -> Iterator[str]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "include_dashboard": False})
    cluster.add_node(num_cpus=3)  # a second node: replicas spread over both
    ray.init(address=cluster.address)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def _deploy(name: str, prefix: str, **settings: Any) -> None:
    args = {"model": "builtin:linear", "app_name": name, "replica_cpus": 0.5, "frontend": FRONTEND, **settings}
    serve.run(build(args), name=name, route_prefix=prefix, blocking=False)


async def _ready(session: aiohttp.ClientSession, url: str, data_workers: int,
                 parity_workers: int = 0) -> dict[str, Any]:
    """/ready once the frontend holds this many healthy workers."""
    body: Any = None
    for _ in range(600):
        try:
            async with session.get(f"{url}/ready") as r:
                body = await r.json(content_type=None)
                if (r.status == 200 and body.get("healthy_data_workers") == data_workers
                        and body.get("healthy_parity_workers") == parity_workers):
                    return body
        except (aiohttp.ClientError, ValueError) as exc:  # the app is still deploying
            body = repr(exc)
        await asyncio.sleep(0.1)
    raise AssertionError(f"not ready: {body}")


async def _predict_each(session: aiohttp.ClientSession, url: str, x: np.ndarray) -> list[dict[str, Any]]:
    """One request per query, all at once, so the frontend groups queries of several requests."""
    async def one(i: int) -> dict[str, Any]:
        async with session.post(f"{url}/predict", json={"inputs": x[i:i + 1].tolist()}) as r:
            body = await r.json()
            assert r.status == 200, body
            return body
    return list(await asyncio.gather(*(one(i) for i in range(len(x)))))


def _outputs(bodies: list[dict[str, Any]]) -> np.ndarray:
    return np.array([b["outputs"][0] for b in bodies])


async def _fault(app: str, deployment: str, rank: int, spec: str) -> None:
    """On the application's fault board; the replica follows within its poll interval."""
    await board(app).set.remote(deployment, rank, spec)
    await asyncio.sleep(4 * POLL_S)


async def _replicas(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/ray/replicas") as r:
        assert r.status == 200
        return await r.json()


@pytest.fixture(scope="module")
def coded_url(serve_url: str) -> str:
    _deploy("coded", "/coded", parity_model="builtin:linear:parity_k=2", k=2, code="sum",
            data_replicas=2, parity_replicas=1, fault_injection=True)
    return f"{serve_url}/coded"


async def test_stalled_replica_is_decoded_exactly(coded_url: str) -> None:
    x = np.random.default_rng(1).random((40, 1, 28, 28), dtype=np.float32)
    async with aiohttp.ClientSession() as session:
        ready = await _ready(session, coded_url, 2, 1)
        assert ready["coded"] and ready["healthy_parity_workers"] == 1
        healthy = await _predict_each(session, coded_url, x)
        np.testing.assert_allclose(_outputs(healthy), LINEAR.predict(x), rtol=1e-4, atol=1e-4)

        rank = (await _replicas(session, coded_url))["data"][0]["rank"]
        await _fault("coded", "parm-data", rank, "stall")
        try:
            t0 = time.monotonic()
            bodies = await _predict_each(session, coded_url, x)
            elapsed = time.monotonic() - t0
        finally:
            await _fault("coded", "parm-data", rank, "none")
        # the linear parity pair decodes exactly: the stalled replica's queries come back right
        np.testing.assert_allclose(_outputs(bodies), LINEAR.predict(x), rtol=1e-4, atol=1e-4)
        paths = [b["path"][0] for b in bodies]
        decoded = [p for p in paths if p.startswith("decoded")]
        assert decoded and all(b["degraded"][0] for b in bodies if b["path"][0].startswith("decoded")), paths
        assert elapsed < 5, elapsed  # nobody waited for the stalled replica (the deadline is 10 s)
        async with session.get(f"{coded_url}/stats") as r:
            stats = await r.json()
        assert stats["answered"] == stats["queries"] and stats["pending"] == 0, stats


async def test_killed_replica_is_replaced_and_nothing_is_lost(coded_url: str) -> None:
    x = np.random.default_rng(2).random((40, 1, 28, 28), dtype=np.float32)
    async with aiohttp.ClientSession() as session:
        await _ready(session, coded_url, 2, 1)
        slot = (await _replicas(session, coded_url))["data"][1]
        victim = slot["replica"]
        actor = ray.get_actor(f"SERVE_REPLICA::coded#parm-data#{victim}", namespace="serve")
        assert await board("coded").kill.remote("parm-data", slot["rank"])  # as the harness does: ray.kill
        with pytest.raises(ray.exceptions.RayActorError):  # it really is gone
            await actor.__ray_ready__.remote()
        bodies = await _predict_each(session, coded_url, x)  # while Ray replaces it: every query answered
        np.testing.assert_allclose(_outputs(bodies), LINEAR.predict(x), rtol=1e-4, atol=1e-4)

        for _ in range(600):  # Serve starts a new replica; the frontend binds it to the freed slot
            replica = (await _replicas(session, coded_url))["data"][1]["replica"]
            if replica not in (None, victim):
                break
            await asyncio.sleep(0.1)
        assert replica not in (None, victim)
        await _ready(session, coded_url, 2, 1)
        after = await _predict_each(session, coded_url, x[:20])
        np.testing.assert_allclose(_outputs(after), LINEAR.predict(x[:20]), rtol=1e-4, atol=1e-4)


async def test_bad_input_is_a_clear_400(coded_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        await _ready(session, coded_url, 2, 1)
        async with session.post(f"{coded_url}/predict", json={"inputs": [[1.0, 2.0]]}) as r:
            body = await r.json()
        assert r.status == 400 and "shape" in body["error"], body
        async with session.post(f"{coded_url}/predict", data=b"x" * 100, headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 415


async def test_equal_resources_on_rays_own_router(serve_url: str) -> None:
    _deploy("equal", "/equal", mode="equal", routing="ray", data_replicas=2, parity_replicas=1)
    url = f"{serve_url}/equal"
    x = np.random.default_rng(3).random((12, 1, 28, 28), dtype=np.float32)
    async with aiohttp.ClientSession() as session:
        await _ready(session, url, 1)  # one slot: the whole 3-replica deployment behind Ray's router
        bodies = await _predict_each(session, url, x)
    np.testing.assert_allclose(_outputs(bodies), LINEAR.predict(x), rtol=1e-4, atol=1e-4)
    assert not any(b["degraded"][0] for b in bodies)


async def test_the_rest_of_the_api_passes_through_the_ingress(coded_url: str) -> None:
    """msgpack /predict, V2 infer with Triton's binary extension (its length header crosses the
    proxy), and the ingress's handle method for other deployments."""
    import msgpack

    x = np.random.default_rng(4).random((2, 1, 28, 28), dtype=np.float32)
    async with aiohttp.ClientSession() as session:
        await _ready(session, coded_url, 2, 1)
        body = msgpack.packb({"inputs": x.reshape(2, -1).tolist()})
        msgpack_type = {"Content-Type": "application/msgpack"}
        async with session.post(f"{coded_url}/predict", data=body, headers=msgpack_type) as r:
            assert r.status == 200 and r.content_type == "application/msgpack"
            reply = msgpack.unpackb(await r.read())
        assert reply["path"] and len(reply["degraded"]) == 2

        head = (b'{"inputs": [{"name": "x", "shape": [2, 784], "datatype": "FP32", "parameters": '
                b'{"binary_data_size": %d}}]}' % x.nbytes)
        async with session.post(f"{coded_url}/v2/models/parm/infer", data=head + x.tobytes(),
                                headers={"Inference-Header-Content-Length": str(len(head)),
                                         "Content-Type": "application/octet-stream"}) as r:
            v2 = await r.json()
        assert r.status == 200, v2
        np.testing.assert_allclose(np.array(v2["outputs"][0]["data"]).reshape(2, -1), LINEAR.predict(x),
                                   rtol=1e-4, atol=1e-4)

    handle = serve.get_app_handle("coded")
    answers = await handle.predict.remote(x)
    np.testing.assert_allclose(answers["outputs"], LINEAR.predict(x), rtol=1e-4, atol=1e-4)
    assert len(answers["path"]) == 2
    with pytest.raises(BadRequest, match="NaN"):  # validated as /predict validates
        await handle.predict.remote(np.full((1, 784), np.nan, np.float32))
