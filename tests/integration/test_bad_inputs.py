"""Issue 11: every bad input gets a clear JSON 4xx, never a 500. Deep nesting (JSON and msgpack, in
/predict and V2 bodies), V2 shapes that overflow or disagree with their data, bad msgpack tensor maps."""
from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest

from frontend.bodies import OFF_LOOP_BYTES
from frontend.config import FrontendConfig
from tests.conftest import frontend, service_of, worker_servers
from workers.model import load_model

DEEP = 100_000   # far past any parser's or Python's recursion limit
SHALLOW = 1_000  # within the parsers' limits, but past what repr() or json.dumps may recurse into
V2 = "/v2/models/parm/infer"
JSON = {"Content-Type": "application/json"}
MSGPACK = {"Content-Type": "application/msgpack"}


def deep_json(n: int, opener: str = "[", leaf: str = "1", closer: str = "]") -> bytes:
    return (opener * n + leaf + closer * n).encode()


def deep_msgpack(n: int, maps: bool = False) -> bytes:
    """n nested one-element arrays (or one-key maps) around nil, as raw msgpack bytes."""
    return (b"\x81\xa1a" if maps else b"\x91") * n + b"\xc0"


def v2_body(tensor: dict, **extra) -> bytes:
    return json.dumps({"inputs": [tensor], **extra}).encode()


def v2_tensor(shape, data=None, datatype="FP32", **params) -> dict:
    tensor = {"name": "x", "shape": shape, "datatype": datatype}
    if data is not None:
        tensor["data"] = data
    if params:
        tensor["parameters"] = params
    return tensor


def binary(head: bytes, tail: bytes, length: int | str | None = None) -> tuple[bytes, dict[str, str]]:
    return head + tail, {"Inference-Header-Content-Length": str(len(head) if length is None else length)}


# a valid one-query body up to its "deadline_ms" value, so that the deadline is what gets parsed
QUERY_JSON = b'{"inputs": [' + json.dumps([0.0] * 784).encode() + b"]"
QUERY_MSGPACK = b"\x82" + msgpack.packb("inputs") + msgpack.packb([[0.0] * 784]) + msgpack.packb("deadline_ms")

NESTED_PREDICT = [
    ("json body", deep_json(DEEP, closer=""), JSON),
    ("json body, balanced", deep_json(DEEP), JSON),
    ("json body, maps", deep_json(DEEP, '{"a":', "1", "}"), JSON),
    ("json inputs", b'{"inputs": ' + deep_json(DEEP) + b"}", JSON),
    ("json deadline_ms", QUERY_JSON + b', "deadline_ms": ' + deep_json(DEEP) + b"}", JSON),
    ("json deadline_ms, within the parser", QUERY_JSON + b', "deadline_ms": ' + deep_json(SHALLOW) + b"}", JSON),
    ("json deadline_ms, maps", QUERY_JSON + b', "deadline_ms": ' + deep_json(SHALLOW, '{"a":', "1", "}") + b"}", JSON),
    ("msgpack body", deep_msgpack(DEEP), MSGPACK),
    ("msgpack body, maps", deep_msgpack(DEEP, maps=True), MSGPACK),
    ("msgpack inputs", b"\x81\xa6inputs" + deep_msgpack(DEEP), MSGPACK),
    ("msgpack deadline_ms", QUERY_MSGPACK + deep_msgpack(SHALLOW), MSGPACK),
    ("msgpack deadline_ms, maps", QUERY_MSGPACK + deep_msgpack(SHALLOW, maps=True), MSGPACK),
    ("msgpack tensor shape", b"\x81\xa6inputs\x83\xa5dtype\xa7float32\xa5shape" + deep_msgpack(SHALLOW)
     + b"\xa4data\xc4\x00", MSGPACK),
    ("msgpack tensor dtype", b"\x81\xa6inputs\x83\xa5shape\x90\xa5dtype" + deep_msgpack(SHALLOW)
     + b"\xa4data\xc4\x00", MSGPACK),
]

NESTED_V2 = [
    ("json body", deep_json(DEEP, closer=""), {}),
    ("json body, maps", deep_json(DEEP, '{"a":', "1", "}"), {}),
    ("json data", b'{"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": '
     + deep_json(DEEP) + b"}]}", {}),
    ("json id", b'{"id": ' + deep_json(SHALLOW) + b', "inputs": [{"name": "x", "shape": [1, 784], '
     b'"datatype": "FP32", "data": ' + json.dumps([0.0] * 784).encode() + b"}]}", {}),
    ("json datatype", b'{"inputs": [{"name": "x", "shape": [1], "datatype": ' + deep_json(SHALLOW) + b"}]}", {}),
    ("json shape", b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": ' + deep_json(SHALLOW) + b"}]}", {}),
    ("json deadline parameter", b'{"parameters": {"deadline_ms": ' + deep_json(SHALLOW) + b'}, "inputs": [{"name": '
     b'"x", "shape": [1, 784], "datatype": "FP32", "data": ' + json.dumps([0.0] * 784).encode() + b"}]}", {}),
    ("binary header", *binary(deep_json(DEEP), b"\0" * 16)),
    ("binary header, maps", *binary(deep_json(DEEP, '{"a":', "1", "}"), b"\0" * 16)),
]


@pytest.fixture
async def client(addr):
    async with worker_servers(["builtin:linear"]) as ws:
        async with frontend(FrontendConfig(data=addr(ws), mode="none", deadline_ms=2000, health_interval_s=30)) as c:
            yield c


async def expect_4xx(c, path: str, body: bytes, headers: dict[str, str], what: str, status: int = 400,
                     text: str | None = None) -> dict:
    resp = await c.post(path, data=body, headers=headers)
    assert resp.content_type == "application/json", (what, resp.status, (await resp.read())[:300])
    payload = await resp.json()
    assert resp.status == status and set(payload) >= {"error", "code"}, (what, resp.status, payload)
    assert len(payload["error"]) < 1000, (what, "error message not bounded", len(payload["error"]))
    if text is not None:
        assert text in payload["error"], (what, payload)
    return payload


async def test_deeply_nested_predict_bodies_are_a_400(client) -> None:
    for what, body, headers in NESTED_PREDICT:
        payload = await expect_4xx(client, "/predict", body, headers, what)
        assert payload["code"] == "bad_request", (what, payload)
    assert service_of(client).stats.queries == 0


async def test_deeply_nested_v2_bodies_are_a_400(client) -> None:
    for what, body, headers in NESTED_V2:
        await expect_4xx(client, V2, body, headers, what)
    assert service_of(client).stats.queries == 0


ROW = [0.0] * 784
V2_SIZES = [
    # (what, body, headers, status, text in the error)
    ("product overflows int64 to 0", v2_body(v2_tensor([2**32, 2**32], [])), {}, 413, "18446744073709551616"),
    ("product overflows, binary", *binary(json.dumps({"inputs": [v2_tensor([2**32, 2**32], binary_data_size=0)]})
                                          .encode(), b""), 413, "elements"),
    ("product wraps to the data length", v2_body(v2_tensor([2**60 + 49, 16], ROW)), {}, 413, "elements"),
    ("dims past int64", v2_body(v2_tensor([2**63 - 1, 2**63 - 1], ROW)), {}, 413, "elements"),
    ("dim past uint64", v2_body(v2_tensor([2**64, 784], ROW)), {}, 400, "below 2**64"),
    ("huge dim", v2_body(v2_tensor([10**30], ROW)), {}, 400, "below 2**64"),
    ("negative dim", v2_body(v2_tensor([-1, 784], ROW)), {}, 400, "non-negative"),
    ("negative dims whose product is positive", v2_body(v2_tensor([-1, -784], ROW)), {}, 400, "non-negative"),
    ("boolean dim", v2_body(v2_tensor([True, 784], ROW)), {}, 400, "integers"),
    ("float dim", v2_body(v2_tensor([1.0, 784], ROW)), {}, 400, "integers"),
    ("too many dims", v2_body(v2_tensor([1] * 100, [0])), {}, 400, "dimensions"),
    ("zero dim", v2_body(v2_tensor([0, 784], [])), {}, 400, "non-empty"),
    ("zero dim beside a huge one", v2_body(v2_tensor([0, 2**63 - 1], [])), {}, 400, "no elements"),
    ("zero dim beside a huge one, binary", *binary(json.dumps({"inputs": [v2_tensor(
        [2**63 - 1, 0], binary_data_size=0)]}).encode(), b""), 400, "no elements"),
    ("data longer than the shape", v2_body(v2_tensor([1, 784], ROW + [0.0])), {}, 400, "785 elements"),
    ("data shorter than the shape", v2_body(v2_tensor([2, 784], ROW)), {}, 400, "784 elements"),
    ("data not a list", v2_body(v2_tensor([1], "abc")), {}, 400, "data"),
    ("no data", v2_body(v2_tensor([1, 784])), {}, 400, "data"),
    ("INT8 data out of range", v2_body(v2_tensor([1, 784], [300] * 784, "INT8")), {}, 400, "INT8"),
    ("INT64 data past int64", v2_body(v2_tensor([1, 784], [2**70] * 784, "INT64")), {}, 400, "INT64"),
    ("binary_data_size over the bytes sent", *binary(json.dumps({"inputs": [v2_tensor(
        [1, 784], binary_data_size=3136)]}).encode(), b"\0" * 3000), 400, "binary_data_size"),
    ("binary_data_size under the bytes sent", *binary(json.dumps({"inputs": [v2_tensor(
        [1, 784], binary_data_size=3136)]}).encode(), b"\0" * 3200), 400, "binary_data_size"),
    ("binary_data_size disagrees with the shape", *binary(json.dumps({"inputs": [v2_tensor(
        [1, 784], binary_data_size=3000)]}).encode(), b"\0" * 3000), 400, "binary_data_size"),
    ("binary_data_size disagrees with the datatype", *binary(json.dumps({"inputs": [v2_tensor(
        [1, 784], datatype="FP64", binary_data_size=3136)]}).encode(), b"\0" * 3136), 400, "binary_data_size"),
    ("binary_data_size a boolean", *binary(json.dumps({"inputs": [v2_tensor(
        [1], binary_data_size=True)]}).encode(), b"\0"), 400, "binary_data_size"),
    ("binary_data_size negative", *binary(json.dumps({"inputs": [v2_tensor(
        [1, 784], binary_data_size=-3136)]}).encode(), b""), 400, "binary_data_size"),
    ("binary tail no tensor claims", *binary(v2_body(v2_tensor([1, 784], ROW)), b"\0" * 8), 400, "binary"),
    ("header length past the body", *binary(v2_body(v2_tensor([1, 784], ROW)), b"", 10**6), 400,
     "Inference-Header-Content-Length"),
    ("header length negative", *binary(v2_body(v2_tensor([1, 784], ROW)), b"", -1), 400,
     "Inference-Header-Content-Length"),
    ("header length cuts the header", *binary(v2_body(v2_tensor([1, 784], ROW)), b"", 5), 400, "malformed JSON"),
    ("header length with underscores", *binary(v2_body(v2_tensor([1, 784], ROW)), b"", "1_0"), 400,
     "Inference-Header-Content-Length"),
    ("header length of 5,000 digits", *binary(v2_body(v2_tensor([1, 784], ROW)), b"", "9" * 5000), 400,
     "Inference-Header-Content-Length"),
    ("id not a string", v2_body(v2_tensor([1, 784], ROW), id=[1, 2]), {}, 400, "id"),
    ("outputs parameters not a map", v2_body(v2_tensor([1, 784], ROW), outputs=[{"name": "o", "parameters": [1]}]),
     {}, 400, "parameters"),
]


async def test_v2_sizes_that_overflow_or_disagree_are_a_4xx(client) -> None:
    for what, body, headers, status, text in V2_SIZES:
        await expect_4xx(client, V2, body, headers, what, status, text)
    assert service_of(client).stats.queries == 0


def tensor_map(dtype, shape, data) -> bytes:
    return msgpack.packb({"inputs": {"dtype": dtype, "shape": shape, "data": data}})


MSGPACK_TENSORS = [
    ("unknown dtype", tensor_map("complex128", [1, 784], b"\0" * 784 * 16), "dtype"),
    ("dtype not a string", tensor_map(["float32"], [1, 784], b"\0" * 784 * 4), "dtype"),
    ("shape overflows uint64 product", tensor_map("float32", [2**32, 2**32], b""), "shape"),
    ("negative dim", tensor_map("float32", [-1, 784], b"\0" * 784 * 4), "shape"),
    ("boolean dim", tensor_map("float32", [True, 784], b"\0" * 784 * 4), "shape"),
    ("shape not a list", tensor_map("float32", 784, b"\0" * 784 * 4), "shape"),
    ("data too short", tensor_map("float32", [1, 784], b"\0" * 100), "bytes"),
    ("data too long", tensor_map("float32", [1, 784], b"\0" * 784 * 5), "bytes"),
    ("data not bytes", tensor_map("float32", [1, 784], [0.0] * 784), "bytes"),
    ("zero queries", tensor_map("float32", [0, 784], b""), "non-empty"),
    ("zero dim beside a huge one", tensor_map("float32", [0, 2**63 - 1], b""), "shape"),
]


async def test_bad_msgpack_tensor_maps_are_a_400(client) -> None:
    for what, body, text in MSGPACK_TENSORS:
        await expect_4xx(client, "/predict", body, MSGPACK, what, 400, text)
    assert service_of(client).stats.queries == 0


async def test_big_bodies_parsed_off_the_loop_get_the_same_answers_and_refusals(client) -> None:
    x = np.random.default_rng(0).random((100, 784), dtype=np.float32)
    rows = x.tolist()
    good = json.dumps({"inputs": rows}).encode()
    assert len(good) > OFF_LOOP_BYTES  # parsed in a thread
    resp = await client.post("/predict", data=good, headers=JSON)
    assert resp.status == 200
    np.testing.assert_allclose(np.array((await resp.json())["outputs"]), load_model("builtin:linear").predict(
        x.reshape(100, 1, 28, 28)), rtol=1e-5, atol=1e-5)
    v2 = v2_body(v2_tensor([100, 784], x.reshape(-1).tolist()))
    resp = await client.post(V2, data=v2)
    assert resp.status == 200 and (await resp.json())["outputs"][0]["shape"] == [100, 10]
    refused = [
        ("ragged", json.dumps({"inputs": rows[:-1] + [rows[-1][:-1]]}).encode(), "rectangular"),
        ("NaN", json.dumps({"inputs": rows[:-1] + [[float("nan")] * 784]}).encode(), "NaN"),
        ("deep", good[:-1] + b', "x": ' + deep_json(DEEP) + b"}", "malformed JSON"),
        ("bad deadline", good[:-1] + b', "deadline_ms": "soon"}', "deadline_ms"),
    ]
    for what, body, text in refused:
        assert len(body) > OFF_LOOP_BYTES
        await expect_4xx(client, "/predict", body, JSON, what, 400, text)
    await expect_4xx(client, V2, v2_body(v2_tensor([101, 784], x.reshape(-1).tolist())), {}, "V2 short", 400,
                     "78400 elements")
    assert service_of(client).stats.queries == 100 * 2
