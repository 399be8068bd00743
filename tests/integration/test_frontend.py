"""The frontend through aiohttp's test client against in-process workers on real sockets."""
from __future__ import annotations

import asyncio

import msgpack
import numpy as np
import pytest

from frontend.config import FrontendConfig
from tests.conftest import eventually, frontend, service_of, worker_servers
from workers.model import load_model
from workers.protocol import decode_tensor, encode_tensor

LINEAR = load_model("builtin:linear")
PARITY = "builtin:linear:parity_k=2"
RNG = np.random.default_rng(0)


def images(n: int) -> np.ndarray:
    return RNG.random((n, 1, 28, 28), dtype=np.float32)


def cfg(data, parity=(), **kw) -> FrontendConfig:
    base = dict(k=2, code="sum", mode="coded" if parity else "none", deadline_ms=2000, health_interval_s=5.0)
    return FrontendConfig(data=data, parity=parity, **(base | kw))


async def test_all_healthy_answers_every_query_exactly(addr) -> None:
    async with worker_servers(["builtin:linear"] * 2 + [PARITY]) as ws, frontend(cfg(addr(ws[:2]), addr(ws[2:]))) as c:
        ws[2].faults.set("delay:ms=300")  # the parity output must lose every race: no decode at all
        x = images(6)
        resp = await c.post("/predict", json={"inputs": x.tolist()})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["degraded"] == [False] * 6 and body["default"] == [False] * 6
        assert body["path"] == ["own"] * 6
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-5, atol=1e-5)


async def test_straggler_is_decoded_from_parity_and_flagged_degraded(addr) -> None:
    async with worker_servers(["builtin:linear"] * 2 + [PARITY]) as ws, frontend(cfg(addr(ws[:2]), addr(ws[2:]))) as c:
        ws[1].faults.set("stall")
        x = images(8)
        resp = await c.post("/predict", json={"inputs": x.tolist()})
        body = await resp.json()
        assert resp.status == 200, body
        degraded = np.array(body["degraded"])
        assert degraded.sum() == 4  # one query of each of the 4 groups sat on the stalled worker
        paths = np.array(body["path"])
        assert set(paths[degraded]) <= {"decoded-overdue", "decoded-silent"} and set(paths[~degraded]) == {"own"}
        # decode is exact for a linear model with the sum code: F_P(x1+x2) - F(x_other) == F(x_i)
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-4, atol=1e-4)
        stats = service_of(c).stats
        assert stats.degraded == 4 and stats.groups_coded == 4
        ws[1].faults.set("none")  # release the stalled requests: their late outputs are dropped


async def test_deadline_gives_504_with_reason_and_nothing_hangs(addr) -> None:
    async with worker_servers(["builtin:linear"] * 2 + [PARITY]) as ws, frontend(cfg(addr(ws[:2]), addr(ws[2:]))) as c:
        for w in ws[:2]:
            w.faults.set("stall")
        resp = await c.post("/predict", json={"inputs": images(2).tolist(), "deadline_ms": 150})
        assert resp.status == 504
        body = await resp.json()
        assert body["code"] == "deadline_exceeded" and "2 of 2 queries" in body["error"]
        assert service_of(c).stats.deadline_exceeded == 2
        for w in ws[:2]:
            w.faults.set("none")


async def test_default_output_at_the_deadline_is_flagged(addr) -> None:
    async with worker_servers(["builtin:linear"]) as ws, \
            frontend(cfg(addr(ws), default_output=(0.0,) * 10, deadline_ms=100)) as c:
        ws[0].faults.set("stall")
        resp = await c.post("/predict", json={"inputs": images(1).tolist()})
        body = await resp.json()
        assert resp.status == 200 and body["default"] == [True] and body["outputs"] == [[0.0] * 10]
        ws[0].faults.set("none")


async def test_default_output_of_the_wrong_size_keeps_the_frontend_unready(addr) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from frontend.app import create_app

    async with worker_servers(["builtin:linear"]) as ws:  # 10 outputs per query; the default has 3
        c = TestClient(TestServer(create_app(cfg(addr(ws), default_output=(0.0,) * 3, health_interval_s=0.05))))
        await c.start_server()
        try:
            await eventually(lambda: service_of(c).pool.data[0].healthy)
            resp = await c.get("/ready")
            ready = await resp.json()
            assert resp.status == 503 and not ready["ready"] and ready["output_size"] == 10, ready
            assert "--default-output has 3 values" in ready["reason"] and "10" in ready["reason"], ready
            for path, body in (("/predict", {"inputs": images(1).tolist()}),
                               ("/v2/models/parm/infer", {"inputs": [{"name": "x", "shape": [1, 784],
                                                                      "datatype": "FP32", "data": [0.0] * 784}]})):
                resp = await c.post(path, json=body)
                payload = await resp.json()
                assert resp.status == 503 and payload["code"] == "not_ready", payload
                assert "--default-output has 3 values" in payload["error"], payload
            assert service_of(c).stats.queries == 0
        finally:
            await c.close()


async def test_a_default_output_that_does_not_fit_the_answers_is_never_a_500(addr) -> None:
    # workers that do not report their output size (like some V2 servers): the frontend learns it
    # from the answers; a request mixing real answers and a default of another size is a 504
    async with worker_servers(["builtin:linear"] * 2) as ws:
        for w in ws:
            w.model.info.pop("num_classes", None)
        async with frontend(cfg(addr(ws), mode="equal", k=1, default_output=(0.0,) * 3, deadline_ms=300)) as c:
            ws[1].faults.set("stall")
            resp = await c.post("/predict", json={"inputs": images(4).tolist()})
            payload = await resp.json()
            assert resp.status == 504 and payload["code"] == "deadline_exceeded", payload
            assert "--default-output has 3 values" in payload["error"], payload
            ready = await (await c.get("/ready")).json()
            assert not ready["ready"] and ready["output_size"] == 10 and "--default-output" in ready["reason"]
            ws[1].faults.set("none")


async def test_crashed_worker_queries_are_redispatched(addr) -> None:
    async with worker_servers(["builtin:linear"] * 2) as ws, frontend(cfg(addr(ws), mode="equal", k=2)) as c:
        ws[0].faults.set("drop")  # every request on it loses its connection
        x = images(6)
        resp = await c.post("/predict", json={"inputs": x.tolist()})
        body = await resp.json()
        assert resp.status == 200, body
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-5, atol=1e-5)
        assert body["degraded"] == [False] * 6
        ws[0].faults.set("none")


async def test_msgpack_tensor_round_trip(addr) -> None:
    async with worker_servers(["builtin:linear"]) as ws, frontend(cfg(addr(ws))) as c:
        x = images(3)
        resp = await c.post("/predict", data=msgpack.packb({"inputs": encode_tensor(x)}),
                            headers={"Content-Type": "application/msgpack"})
        assert resp.status == 200 and resp.content_type == "application/msgpack"
        body = msgpack.unpackb(await resp.read())
        np.testing.assert_allclose(decode_tensor(body["outputs"]), LINEAR.predict(x), rtol=1e-5, atol=1e-5)
        assert body["degraded"] == [False] * 3
        assert len(service_of(c).latency) == 3  # every group feeds the service's one latency record


async def test_flat_queries_are_accepted(addr) -> None:
    async with worker_servers(["builtin:linear"]) as ws, frontend(cfg(addr(ws))) as c:
        x = images(2)
        resp = await c.post("/predict", json={"inputs": x.reshape(2, -1).tolist()})
        assert resp.status == 200
        np.testing.assert_allclose(np.array((await resp.json())["outputs"]), LINEAR.predict(x), atol=1e-5)


@pytest.mark.parametrize("kwargs, status, code, text", [
    ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "bad_request", "malformed JSON"),
    ({"data": b"\xc1", "headers": {"Content-Type": "application/msgpack"}}, 400, "bad_request", "malformed msgpack"),
    ({"data": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type", "text/plain"),
    ({"json": {"input": []}}, 400, "bad_request", '"inputs"'),
    ({"json": {"inputs": []}}, 400, "bad_request", "non-empty"),
    ({"json": {"inputs": [[1.0, 2.0]]}}, 400, "bad_request", "shape [1, 28, 28]"),
    ({"json": {"inputs": [[1.0], [1.0, 2.0]]}}, 400, "bad_request", "rectangular"),
    ({"json": {"inputs": [["a"] * 784]}}, 400, "bad_request", "rectangular"),
    ({"json": {"inputs": [[float("nan")] * 784]}}, 400, "bad_request", "NaN"),
    ({"json": {"inputs": [[0.0] * 784], "deadline_ms": -5}}, 400, "bad_request", "deadline_ms"),
    ({"json": {"inputs": [[0.0] * 784], "deadline_ms": "soon"}}, 400, "bad_request", "deadline_ms"),
    ({"json": {"inputs": [[0.0] * 784], "deadline_ms": True}}, 400, "bad_request", "deadline_ms"),
    ({"json": {"inputs": [[0.0] * 784] * 1025}}, 413, "payload_too_large", "limit is 1024"),
])
async def test_bad_input_gets_a_clear_4xx(addr, kwargs, status, code, text) -> None:
    async with worker_servers(["builtin:linear"]) as ws, frontend(cfg(addr(ws))) as c:
        resp = await c.post("/predict", **kwargs)
        body = await resp.json()
        assert resp.status == status and body["code"] == code and text in body["error"], body
        assert service_of(c).stats.queries == 0  # nothing was accepted


async def test_body_over_limit_and_unknown_route_are_json_errors(addr) -> None:
    async with worker_servers(["builtin:linear"]) as ws, frontend(cfg(addr(ws), max_body_bytes=1000)) as c:
        resp = await c.post("/predict", json={"inputs": [[0.0] * 784]})
        assert resp.status == 413 and (await resp.json())["code"] == "payload_too_large"
        resp = await c.get("/nope")
        assert resp.status == 404 and "error" in await resp.json()
        resp = await c.get("/predict")
        assert resp.status == 405 and "error" in await resp.json()


async def test_ready_reflects_real_answers_and_overload_is_503(addr) -> None:
    async with worker_servers(["builtin:linear"]) as ws, frontend(cfg(addr(ws), max_pending=2)) as c:
        assert (await c.get("/health")).status == 200
        ready = await (await c.get("/ready")).json()
        assert ready["ready"] and ready["healthy_data_workers"] == 1 and ready["input_shape"] == [1, 28, 28]
        resp = await c.post("/predict", json={"inputs": images(3).tolist()})
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["code"] == "overloaded"


async def test_client_disconnect_leaks_nothing(addr) -> None:
    async with worker_servers(["builtin:linear"] * 2 + [PARITY]) as ws, frontend(cfg(addr(ws[:2]), addr(ws[2:]))) as c:
        ws[0].faults.set("delay:ms=200")
        ws[1].faults.set("delay:ms=200")
        task = asyncio.ensure_future(c.post("/predict", json={"inputs": images(2).tolist()}))
        await eventually(lambda: service_of(c).pending == 2)
        task.cancel()  # the client goes away mid-request
        await asyncio.gather(task, return_exceptions=True)
        await eventually(lambda: service_of(c).pending == 0 and not service_of(c).runs)
        assert service_of(c).stats.answered == 2  # the work still completed, then was dropped


async def test_decode_grace_prefers_the_real_output(addr) -> None:
    async with worker_servers(["builtin:linear"] * 2 + [PARITY]) as ws, \
            frontend(cfg(addr(ws[:2]), addr(ws[2:]), decode_grace_ms=200)) as c:
        ws[0].faults.set("delay:ms=50")  # slower than the parity, faster than the grace
        resp = await c.post("/predict", json={"inputs": images(4).tolist()})
        assert (await resp.json())["degraded"] == [False] * 4
        ws[0].faults.set("stall")  # a real straggler is still decoded once the grace has passed
        resp = await c.post("/predict", json={"inputs": images(2).tolist()})
        assert sorted((await resp.json())["degraded"]) == [False, True]
        ws[0].faults.set("none")


async def test_hedged_mode_resends_a_slow_query_and_answers_once(addr) -> None:
    async with worker_servers(["builtin:linear"] * 2) as ws, \
            frontend(cfg(addr(ws[:1]), addr(ws[1:]), mode="hedged", hedge_delay_ms=100)) as c:
        ws[0].faults.set("stall")
        x = images(4)
        resp = await c.post("/predict", json={"inputs": x.tolist()})
        body = await resp.json()
        assert resp.status == 200, body
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-5, atol=1e-5)
        stats = service_of(c).stats
        assert stats.answered == 4 and stats.degraded == 0  # one answer each, never decoded
        # queries that went to the stalled replica can only be answered by their hedge; a busy
        # machine may also hedge some that went to the healthy one, whose first copy then wins
        assert 1 <= stats.hedge_wins <= stats.hedges <= 4
        ws[0].faults.set("none")


async def test_parity_worker_for_another_k_is_refused_and_service_goes_uncoded(addr) -> None:
    async with worker_servers(["builtin:linear"] * 2 + ["builtin:linear:parity_k=3"]) as ws, \
            frontend(cfg(addr(ws[:2]), addr(ws[2:]), health_interval_s=0.05)) as c:
        pool = service_of(c).pool
        await eventually(lambda: pool.parity[0].refused is not None)
        assert "k=3" in pool.parity[0].refused
        ready = await (await c.get("/ready")).json()
        assert ready["ready"] and ready["coded"] is False and ready["healthy_parity_workers"] == 0
        x = images(4)
        resp = await c.post("/predict", json={"inputs": x.tolist()})
        body = await resp.json()
        assert body["degraded"] == [False] * 4  # never decoded with the wrong parity model
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-5, atol=1e-5)
        assert service_of(c).stats.groups_without_parity == 2


async def test_prometheus_metrics_count_queries_degraded_answers_and_errors(addr) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async with worker_servers(["builtin:linear"] * 2 + [PARITY]) as ws, frontend(cfg(addr(ws[:2]), addr(ws[2:]))) as c:
        ws[1].faults.set("stall")
        assert (await c.post("/predict", json={"inputs": images(4).tolist()})).status == 200
        assert (await c.post("/predict", json={"inputs": []})).status == 400
        resp = await c.get("/metrics")
        assert resp.status == 200 and resp.content_type == "text/plain"
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(await resp.text()) for s in fam.samples}
        assert samples[("parm_queries_total", ())] == 4
        assert samples[("parm_degraded_answers_total", ())] == 2
        assert samples[("parm_http_errors_total", (("code", "bad_request"),))] == 1
        assert samples[("parm_query_latency_seconds_count", (("degraded", "true"), ("mode", "coded")))] == 2
        assert samples[("parm_query_latency_seconds_count", (("degraded", "false"), ("mode", "coded")))] == 2
        assert samples[("parm_coded", ())] == 1 and samples[("parm_pending_queries", ())] == 0
        worker = f"127.0.0.1:{ws[0].port}"
        assert samples[("parm_worker_up", (("role", "data"), ("worker", worker)))] == 1
        assert samples[("parm_worker_in_flight", (("role", "data"), ("worker", f"127.0.0.1:{ws[1].port}")))] >= 2
        ws[1].faults.set("none")


async def test_bearer_token_guards_the_api_but_not_the_probes(addr) -> None:
    async with worker_servers(["builtin:linear"]) as ws, frontend(cfg(addr(ws), auth_token="s3cret")) as c:
        body = {"inputs": images(1).tolist()}
        resp = await c.post("/predict", json=body)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await resp.json())["code"] == "unauthorized"
        assert (await c.post("/predict", json=body, headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await c.post("/v2/models/parm/infer", json={})).status == 401
        assert (await c.post("/predict", json=body, headers={"Authorization": "Bearer s3cret"})).status == 200
        for probe in ("/health", "/ready", "/metrics", "/v2/health/live"):
            assert (await c.get(probe)).status == 200, probe


async def test_a_busy_worker_whose_probe_times_out_stays_in_rotation(addr) -> None:
    async with worker_servers(["builtin:sleep:ms=150"], max_batch=1) as ws, \
            frontend(cfg(addr(ws), health_interval_s=0.05, health_timeout_s=0.3, deadline_ms=5000)) as c:
        # 8 queued queries of 150 ms each: every probe now waits behind them and times out, but
        # results keep arriving, so the worker is busy, not dead: a query sent meanwhile is accepted
        burst = [asyncio.ensure_future(c.post("/predict", json={"inputs": images(1).tolist()})) for _ in range(8)]
        await asyncio.sleep(0.6)
        late = await c.post("/predict", json={"inputs": images(1).tolist()})
        assert late.status == 200, await late.text()
        assert [r.status for r in await asyncio.gather(*burst)] == [200] * 8


async def test_not_ready_says_when_to_retry(addr) -> None:
    async with worker_servers(["builtin:linear"]) as ws, frontend(cfg(addr(ws))) as c:
        service_of(c).pool.data[0].refused = "test"
        resp = await c.post("/predict", json={"inputs": images(1).tolist()})
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        service_of(c).pool.data[0].refused = None


async def test_berrut_code_needs_no_parity_model_and_is_exact_at_k2_for_a_linear_model(addr) -> None:
    # k=2, r=1: the parity query is the midpoint interpolant (x1 + x2) / 2 served by the base model,
    # and Berrut's decode 2 * F(parity) - F(x_other) is exact for an affine F
    async with worker_servers(["builtin:linear"] * 3) as ws, \
            frontend(cfg(addr(ws[:2]), addr(ws[2:]), code="berrut")) as c:
        ws[1].faults.set("stall")
        x = images(4)
        body = await (await c.post("/predict", json={"inputs": x.tolist()})).json()
        assert sum(body["degraded"]) == 2
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-4, atol=1e-4)
        ws[1].faults.set("none")


async def test_berrut_r2_survives_two_stragglers_per_group(addr) -> None:
    from coders import BerrutCode

    async with worker_servers(["builtin:linear"] * 6) as ws, \
            frontend(cfg(addr(ws[:4]), addr(ws[4:]), code="berrut", k=4, r=2)) as c:
        ws[1].faults.set("stall")
        ws[2].faults.set("stall")
        x = images(4)  # one request of 4 queries = one group, spread over the 4 data workers
        body = await (await c.post("/predict", json={"inputs": x.tolist()})).json()
        missing = [i for i, d in enumerate(body["degraded"]) if d]
        assert len(missing) == 2
        code = BerrutCode(4, 2)
        parity_in = code.encode(x[:, None])[:, 0]  # (2, 1, 28, 28)
        available = {j: LINEAR.predict(x[j:j + 1]) for j in range(4) if j not in missing}
        available |= {4 + i: LINEAR.predict(parity_in[i]) for i in range(2)}
        expected = code.decode(available)  # the decode from exactly these nodes
        out = np.array(body["outputs"])
        for m in missing:
            np.testing.assert_allclose(out[m], expected[m][0], rtol=1e-4, atol=1e-4)
        for j in set(range(4)) - set(missing):
            np.testing.assert_allclose(out[j], LINEAR.predict(x[j:j + 1])[0], rtol=1e-5, atol=1e-5)
        assert service_of(c).stats.groups_coded == 1
        ws[1].faults.set("none")
        ws[2].faults.set("none")
