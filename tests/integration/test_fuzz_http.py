"""Property-based fuzzing of the HTTP API: whatever the body, content type, route or method, the answer
is a JSON 2xx/4xx (msgpack, V2 binary or Prometheus text where those are asked for), never a 5xx (but
the designed 504 when the client asks for a deadline too short to meet), and nothing stays pending.

Every request also goes to the lean predict listener (parm serve --predict-port) on the same service:
the same checks there, and for POST /predict the same status and error as the main port.

Besides random bodies it generates classes of inputs that once broke the server: nesting tens of
thousands of levels deep (raw bytes: json.dumps itself would recurse), V2 shapes with huge, negative
or overflowing dimensions, sizes that disagree (shape vs data, binary_data_size vs the bytes sent,
Inference-Header-Content-Length vs the body), Triton binary requests, and msgpack tensor maps with a
bad dtype, shape or data length. PARM_FUZZ_EXAMPLES sets the count (CI a few hundred; 10,000 and more
for a deliberate run).
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frontend.config import FrontendConfig
from frontend.predict_listener import PredictListener
from tests.conftest import frontend, service_of, worker_servers

EXAMPLES = int(os.environ.get("PARM_FUZZ_EXAMPLES", "300"))
HEADER_LENGTH = "Inference-Header-Content-Length"
QUERY = 784  # builtin:linear's input size (1, 28, 28)


@dataclass
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def nested(ints: st.SearchStrategy[int]) -> st.SearchStrategy[object]:
    scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=True), st.text(max_size=8))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                        max_leaves=40)


values = nested(st.integers(-2**70, 2**70))       # JSON has no integer limit
packable = nested(st.integers(-2**63, 2**64 - 1))  # msgpack's integer range
near_valid = st.builds(lambda n, v, extra: {"inputs": [[v] * QUERY] * n, **extra}, st.integers(0, 3),
                       st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.text(max_size=2)),
                       st.dictionaries(st.sampled_from(["deadline_ms", "x"]), values, max_size=2))
bodies = st.one_of(
    st.binary(max_size=300),
    values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.dictionaries(st.sampled_from(["inputs", "deadline_ms"]), values, max_size=2).map(lambda v: json.dumps(v).encode()),
    near_valid.map(lambda v: json.dumps(v).encode()),
    packable.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.dictionaries(st.sampled_from(["inputs", "deadline_ms"]), packable, max_size=2).map(msgpack.packb),
)
content_types = st.sampled_from(["application/json", "application/msgpack", "text/plain", "", "application/json; charset=latin-1"])
POST_PATHS = ["/predict", "/v2/models/parm/infer", "/v2/models/parm/versions/1/infer", "/v2/models/other/infer"]
GET_PATHS = ["/health", "/ready", "/stats", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready",
             "/v2/models/parm", "/v2/models/parm/ready", "/v2/models/parm/versions/1", "/v2/models/other",
             "/v2/models/other/ready", "/nope", "/predict"]
v2_paths = st.sampled_from(POST_PATHS[1:3])
header_lengths = st.one_of(st.integers(-5, 10**7).map(str), st.sampled_from(["", "x", "1_0", "+5", " 7 ", "9" * 5000]))


def with_ctype(ctype: str) -> dict[str, str]:
    return {"Content-Type": ctype} if ctype else {}


# -- random bodies on every route, with a random header length now and then -------------------------

random_requests = st.builds(
    lambda body, ctype, path, length: Request("POST", path, body, with_ctype(ctype) | length),
    bodies, content_types, st.sampled_from(POST_PATHS + ["/predict", "/nope", "/health"]),
    st.one_of(st.just({}), header_lengths.map(lambda v: {HEADER_LENGTH: v})))
get_requests = st.builds(lambda path, method: Request(method, path), st.sampled_from(GET_PATHS),
                         st.sampled_from(["GET", "GET", "GET", "PUT", "DELETE"]))

# -- nesting depth: raw bytes up to tens of thousands of levels, in every place a value goes ----------

JSON_OPEN = {"list": b"[", "map": b'{"a":'}
JSON_CLOSE = {"list": b"]", "map": b"}"}
MSGPACK_OPEN = {"list": b"\x91", "map": b"\x81\xa1a"}  # a one-element array, a one-key map
ZEROS = json.dumps([0.0] * QUERY).encode()
V2_JSON_SLOTS = [  # where a deep value goes in a V2 inference request
    b'{"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": %s}]}',
    b'{"inputs": [{"name": "x", "shape": %s, "datatype": "FP32", "data": [0]}]}',
    b'{"inputs": [{"name": "x", "shape": [1], "datatype": %s, "data": [0]}]}',
    b'{"id": %s, "inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": ' + ZEROS + b"}]}",
    b'{"parameters": {"deadline_ms": %s}, "inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", '
    b'"data": ' + ZEROS + b"}]}",
    b'{"outputs": [{"name": "o", "parameters": %s}], "inputs": [{"name": "x", "shape": [1, 784], '
    b'"datatype": "FP32", "data": ' + ZEROS + b"}]}",
    b'{"inputs": [%s]}',
]
PREDICT_JSON_SLOTS = [b"%s", b'{"inputs": %s}', b'{"inputs": [%s]}',
                      b'{"inputs": [' + ZEROS + b'], "deadline_ms": %s}']


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    """A value nested ``depth`` levels (lists, maps or both), balanced or cut short."""
    depth = draw(st.one_of(st.integers(1, 2000), st.integers(1, 30_000)))
    kinds = draw(st.lists(st.sampled_from(["list", "map"]), min_size=1, max_size=3))
    levels = [kinds[i % len(kinds)] for i in range(depth)]
    leaf = draw(st.sampled_from([b"1", b"0.5", b'"s"', b"null", b"[]", b"{}", b"NaN", b""]))
    closed = draw(st.booleans())
    return (b"".join(JSON_OPEN[k] for k in levels) + leaf
            + (b"".join(JSON_CLOSE[k] for k in reversed(levels)) if closed else b""))


@st.composite
def deep_msgpack(draw: st.DrawFn) -> bytes:
    depth = draw(st.one_of(st.integers(1, 2000), st.integers(1, 30_000)))
    kinds = draw(st.lists(st.sampled_from(["list", "map"]), min_size=1, max_size=3))
    leaf = draw(st.sampled_from([b"\xc0", b"\x01", b"\xcb" + b"\x7f\xf8" + b"\0" * 6, b"\x90", b""]))  # nil 1 NaN []
    return b"".join(MSGPACK_OPEN[kinds[i % len(kinds)]] for i in range(depth)) + leaf


QUERY_MSGPACK = b"\x82" + msgpack.packb("inputs") + msgpack.packb([[0.0] * QUERY]) + msgpack.packb("deadline_ms")
MSGPACK_SLOTS = [b"%s", b"\x81\xa6inputs%s", b"\x81\xa6inputs\x91%s", QUERY_MSGPACK + b"%s",
                 b"\x81\xa6inputs\x83\xa5dtype\xa7float32\xa4data\xc4\x00\xa5shape%s",
                 b"\x81\xa6inputs\x83\xa5shape\x90\xa4data\xc4\x00\xa5dtype%s"]

nesting_requests = st.one_of(
    st.builds(lambda slot, v: Request("POST", "/predict", slot.replace(b"%s", v), with_ctype("application/json")),
              st.sampled_from(PREDICT_JSON_SLOTS), deep_json()),
    st.builds(lambda slot, v: Request("POST", "/predict", slot.replace(b"%s", v), with_ctype("application/msgpack")),
              st.sampled_from(MSGPACK_SLOTS), deep_msgpack()),
    st.builds(lambda path, slot, v: Request("POST", path, slot.replace(b"%s", v), with_ctype("application/json")),
              v2_paths, st.sampled_from(V2_JSON_SLOTS), deep_json()),
    st.builds(lambda path, v, tail: Request("POST", path, v + tail, {HEADER_LENGTH: str(len(v))}),  # binary header
              v2_paths, deep_json(), st.binary(max_size=64)),
)

# -- V2 shapes and sizes: huge, negative, overflowing dims; shape vs data vs bytes vs header length ---

EDGE_DIMS = [0, 1, 2, 784, 1024, 1025, 2**31, 2**32, 2**32 + 1, 2**60 + 49, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
             10**30, -1, -784, -2**63]
dims = st.one_of(st.sampled_from(EDGE_DIMS), st.integers(-2**70, 2**70), st.integers(0, 1100))
shapes = st.one_of(
    st.lists(dims, max_size=5),
    st.builds(lambda n, q: [n, *q], st.integers(0, 4), st.sampled_from([[784], [1, 28, 28], [28, 28], [783]])),
    st.lists(st.just(1), min_size=60, max_size=70),  # numpy's limit is 64 dimensions
)
V2_TYPES = {"FP32": 4, "FP64": 8, "FP16": 2, "INT64": 8, "INT32": 4, "INT16": 2, "INT8": 1, "UINT8": 1, "UINT16": 2,
            "UINT32": 4}
datatypes = st.one_of(st.sampled_from(list(V2_TYPES) + ["FP32"] * 4),
                      st.sampled_from(["BYTES", "BOOL", "fp32", "", None, 7]))


def product(shape: list[int]) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def near(n: int) -> st.SearchStrategy[int]:
    """n, or a little off it (or anywhere, when n is too big to send)."""
    if not 0 <= n <= 4 * QUERY * 8:
        return st.integers(0, 4000)
    return st.one_of(st.just(n), st.integers(max(n - 9, 0), n + 9), st.integers(0, 4000))


@st.composite
def v2_json_requests(draw: st.DrawFn) -> Request:
    shape, datatype = draw(shapes), draw(datatypes)
    count = draw(near(product(shape) if isinstance(shape, list) else 0))
    element = draw(st.sampled_from([0.5, 0, 300, -1, 2**70, 1e300, "x", True, [0.5]]))
    tensor: dict[str, object] = {"name": "input-0", "shape": shape, "datatype": datatype}
    if draw(st.integers(0, 9)):
        tensor["data"] = draw(st.sampled_from([[element] * count, [[element] * count], "abc", 5, None]))
    header: dict[str, object] = {"inputs": [tensor]}
    header |= draw(st.fixed_dictionaries({}, optional={
        "id": st.one_of(st.text(max_size=5), st.integers(), st.lists(st.integers(), max_size=2)),
        "parameters": st.one_of(st.fixed_dictionaries({}, optional={
            "binary_data_output": st.booleans(), "deadline_ms": st.one_of(st.floats(), st.integers(-5, 10**6))}),
            st.lists(st.integers(), max_size=2)),
        "outputs": st.one_of(st.just([{"name": "output-0", "parameters": {"binary_data": True}}]),
                             st.just([{"name": "o", "parameters": [1]}]), st.just("x"), st.just([1]))}))
    return Request("POST", draw(v2_paths), json.dumps(header).encode(), with_ctype(draw(content_types)))


@st.composite
def v2_binary_requests(draw: st.DrawFn) -> Request:
    """Triton's binary extension: JSON header, then the tensor's raw bytes; every size may disagree."""
    shape, datatype = draw(shapes), draw(datatypes)
    itemsize = V2_TYPES.get(datatype, 4) if isinstance(datatype, str) else 4
    needed = product(shape) * itemsize
    nbytes = draw(st.one_of(near(needed), st.sampled_from([-1, 2**64, True, "8", None, 1.5])))
    sent = draw(near(needed))
    params: dict[str, object] = {} if nbytes is None else {"binary_data_size": nbytes}
    head = json.dumps({"inputs": [{"name": "input-0", "shape": shape, "datatype": datatype, "parameters": params}],
                       "parameters": {"binary_data_output": draw(st.booleans())}}).encode()
    tail = draw(st.sampled_from([b"\0", b"\x3f", b"\xff"])) * sent  # zeros, small numbers, NaNs
    length = draw(st.one_of(st.just(str(len(head))), st.integers(-2, len(head) + len(tail) + 3).map(str),
                            header_lengths))
    headers = {HEADER_LENGTH: length} | with_ctype(draw(st.sampled_from(["application/octet-stream", ""])))
    return Request("POST", draw(v2_paths), head + tail, headers)


# -- msgpack tensor maps with a bad dtype, shape or data length ---------------------------------------

WIRE_DTYPES = {"float32": 4, "float64": 8, "float16": 2, "int64": 8, "int32": 4, "uint8": 1}


@st.composite
def msgpack_tensor_requests(draw: st.DrawFn) -> Request:
    dtype = draw(st.one_of(st.sampled_from(list(WIRE_DTYPES) + ["float32"] * 3),
                           st.sampled_from(["complex128", "int8", "object", "", 5, None, ["float32"]])))
    shape = draw(st.one_of(shapes.map(lambda s: [d for d in s if -2**63 <= d < 2**64]),  # msgpack's int range
                           st.sampled_from([784, "1", None, [[1]], [1.5], [True, 784]])))
    itemsize = WIRE_DTYPES.get(dtype, 4) if isinstance(dtype, str) else 4
    needed = product(shape) * itemsize if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else 0
    data = draw(st.one_of(near(needed).map(lambda n: b"\0" * n), st.sampled_from([[0.0] * 4, "abc", None])))
    tensor = draw(st.fixed_dictionaries({}, optional={"dtype": st.just(dtype), "shape": st.just(shape),
                                                      "data": st.just(data)}))
    extra = draw(st.fixed_dictionaries({}, optional={"deadline_ms": st.integers(-5, 10**6)}))
    body = msgpack.packb({"inputs": tensor, **extra}, use_bin_type=True)
    return Request("POST", "/predict", body, with_ctype(draw(st.sampled_from(["application/msgpack",
                                                                               "application/x-msgpack"]))))


requests = st.one_of(random_requests, get_requests, nesting_requests, v2_json_requests(), v2_binary_requests(),
                     msgpack_tensor_requests())


@pytest.fixture(scope="module")
def fuzz_loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_no_request_gets_a_5xx(fuzz_loop) -> None:
    fuzz_loop.run_until_complete(fuzz(fuzz_loop, EXAMPLES, coded=False))


@pytest.mark.slow
def test_ten_thousand_requests_to_a_coded_frontend_get_no_5xx(fuzz_loop) -> None:
    """The benchmark-sized run (BENCHMARKS.md), against the coded path: pytest -m slow."""
    fuzz_loop.run_until_complete(fuzz(fuzz_loop, max(EXAMPLES, 10_000), coded=True))


async def fuzz(fuzz_loop: asyncio.AbstractEventLoop, examples: int, coded: bool) -> None:
    models = ["builtin:linear"] * (2 if coded else 1) + (["builtin:linear:parity_k=2"] if coded else [])
    async with worker_servers(models) as ws:
        addrs = tuple(("127.0.0.1", w.port) for w in ws)
        cfg = FrontendConfig(data=addrs[:2] if coded else addrs, parity=addrs[2:], k=2, code="sum",
                             mode="coded" if coded else "none", deadline_ms=2000, health_interval_s=30)
        async with frontend(cfg) as c, aiohttp.ClientSession() as session:
            lean = PredictListener(service_of(c))  # parm serve --predict-port, fuzzed beside the main port
            lean_url = f"http://127.0.0.1:{await lean.start('127.0.0.1', 0)}"
            statuses: list[int] = []

            @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
            @given(req=requests)
            def one(req: Request) -> None:
                main = asyncio.run_coroutine_threadsafe(send(c.request, req), fuzz_loop).result(timeout=30)
                judge(req, *main)
                statuses.append(main[0])
                lean_path = req.path if req.path.startswith("/") else "/" + req.path
                on_lean = asyncio.run_coroutine_threadsafe(
                    send(lambda m, p, **kw: session.request(m, lean_url + p, **kw), Request(
                        req.method, lean_path, req.body, req.headers)), fuzz_loop).result(timeout=30)
                judge(req, *on_lean)
                if req.method == "POST" and req.path.partition("?")[0] == "/predict" and max(main[0], on_lean[0]) < 500:
                    assert on_lean == main or on_lean[0] == main[0] == 200, (on_lean, main, req.headers, req.body[:200])

            await asyncio.to_thread(one)
            await lean.close()
            assert len(statuses) >= examples and service_of(c).pending == 0
            print(f"fuzz: {len(statuses)} requests ({'coded' if coded else 'none'} mode), "
                  f"statuses {dict(sorted(_counts(statuses).items()))}")


def judge(req: Request, status: int, payload: object) -> None:
    # the only 5xx allowed are the designed ones: a deadline the client set too short
    designed = status == 504 and isinstance(payload, dict) and payload.get("code") == "deadline_exceeded"
    what = (status, payload, req.method, req.path, req.headers, req.body[:200])
    assert status < 500 or designed, what
    if status >= 400:  # every error is JSON {"error", "code"}
        assert isinstance(payload, dict) and {"error", "code"} <= set(payload), what
    else:
        assert payload is not None and "error" not in payload, what


def _counts(statuses: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return counts


async def send(request, req: Request) -> tuple[int, object]:
    """-> (status, decoded body): JSON, msgpack, V2 binary (its JSON header) or Prometheus text.
    ``request``: the main port's test client's, or a session's on the lean listener."""
    async with request(req.method, req.path, data=req.body, headers=req.headers) as resp:
        raw = await resp.read()
    if resp.content_type == "application/msgpack":
        return resp.status, msgpack.unpackb(raw)
    if resp.content_type == "application/octet-stream":  # V2 binary output: JSON header, then the tensor bytes
        return resp.status, json.loads(raw[:int(resp.headers[HEADER_LENGTH])])
    if resp.content_type == "text/plain" and req.path == "/metrics" and resp.status == 200:
        return resp.status, {"metrics": raw.decode()}
    try:
        return resp.status, json.loads(raw)
    except ValueError:  # not JSON (aiohttp's own text/plain 500 page): the caller's assertion shows it
        return resp.status, raw[:200]
