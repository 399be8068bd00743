"""The Open Inference Protocol (V2) endpoint, driven by the real tritonclient (aio HTTP client)
and by hand-built requests for the error cases."""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http.aio as triton
from tritonclient.utils import InferenceServerException

from frontend.config import FrontendConfig
from tests.conftest import frontend, worker_servers
from workers.model import load_model

LINEAR = load_model("builtin:linear")
BINARY_HEAD = b'{"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}'
PARITY = "builtin:linear:parity_k=2"


def cfg(addr, ws) -> FrontendConfig:
    return FrontendConfig(data=addr(ws[:2]), parity=addr(ws[2:]), k=2, code="sum", deadline_ms=3000,
                          health_interval_s=30.0, model_name="linear")


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


@pytest.mark.parametrize("binary", [True, False])
async def test_tritonclient_live_metadata_and_infer(addr, binary: bool) -> None:
    async with worker_servers(["builtin:linear"] * 2 + [PARITY]) as ws, frontend(cfg(addr, ws)) as c:
        ws[2].faults.set("delay:ms=300")  # parity loses every race: nothing is decoded
        client = triton.InferenceServerClient(url=f"127.0.0.1:{c.server.port}")
        try:
            assert await client.is_server_live() and await client.is_server_ready()
            assert await client.is_model_ready("linear")
            meta = await client.get_model_metadata("linear")
            assert meta["inputs"][0]["shape"] == [-1, 1, 28, 28] and meta["outputs"][0]["shape"] == [-1, 10]
            x = images(4)
            inp = triton.InferInput("input-0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            outputs = [triton.InferRequestedOutput("output-0", binary_data=binary)]
            result = await client.infer("linear", [inp], outputs=outputs, request_id="r1")
            np.testing.assert_allclose(result.as_numpy("output-0"), LINEAR.predict(x), rtol=1e-5, atol=1e-5)
            response = result.get_response()
            assert response["id"] == "r1" and response["parameters"]["degraded"] is False
        finally:
            await client.close()


async def test_tritonclient_sees_degraded_answers_when_a_worker_stalls(addr) -> None:
    async with worker_servers(["builtin:linear"] * 2 + [PARITY]) as ws, frontend(cfg(addr, ws)) as c:
        ws[1].faults.set("stall")
        client = triton.InferenceServerClient(url=f"127.0.0.1:{c.server.port}")
        try:
            x = images(4, seed=1)
            inp = triton.InferInput("input-0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            result = await client.infer("linear", [inp])  # no outputs named: binary output by default
            np.testing.assert_allclose(result.as_numpy("output-0"), LINEAR.predict(x), rtol=1e-4, atol=1e-4)
            params = result.get_response()["parameters"]
            assert params["degraded"] is True and params["degraded_count"] == 2
            assert len(params["degraded_indices"].split(",")) == 2
            with pytest.raises(InferenceServerException, match="unknown model 'other'"):
                await client.infer("other", [inp])
        finally:
            await client.close()
            ws[1].faults.set("none")


@pytest.mark.parametrize("body, headers, status, text", [
    (b"{bad", {}, 400, "malformed JSON"),
    (b'{"inputs": []}', {}, 400, "one tensor"),
    (b'{"inputs": [{"name": "x", "shape": [1, 784], "datatype": "BYTES", "data": []}]}', {}, 400, "BYTES"),
    (b'{"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": [1, 2]}]}', {}, 400, "784"),
    (b'{"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]}', {}, 400,
     "shape [1, 28, 28]"),
    (b'{"inputs": [{"name": "x", "shape": "1", "datatype": "FP32", "data": [1]}]}', {}, 400, "non-empty list"),
    (BINARY_HEAD + b"\0" * 8, {"Inference-Header-Content-Length": str(len(BINARY_HEAD))}, 400, "binary_data_size"),
    (b'{}', {"Inference-Header-Content-Length": "x"}, 400, "integer"),
])
async def test_bad_v2_requests_get_a_json_4xx(addr, body, headers, status, text) -> None:
    async with worker_servers(["builtin:linear"] * 2 + [PARITY]) as ws, frontend(cfg(addr, ws)) as c:
        resp = await c.post("/v2/models/linear/infer", data=body, headers=headers)
        payload = await resp.json()
        assert resp.status == status and text in payload["error"], payload
        resp = await c.get("/v2/models/nope")
        assert resp.status == 404 and "unknown model" in (await resp.json())["error"]
