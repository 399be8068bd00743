"""Property-based fuzzing of the HTTP API: whatever the body, content type or route, the answer
is a JSON 2xx/4xx, never a 5xx (but the designed 504 when the client asks for a deadline too short
to meet), and nothing stays pending. PARM_FUZZ_EXAMPLES sets the count
(a benchmark run uses 10,000 and more; CI a few hundred)."""
from __future__ import annotations

import asyncio
import json
import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frontend.config import FrontendConfig
from tests.conftest import frontend, service_of, worker_servers

EXAMPLES = int(os.environ.get("PARM_FUZZ_EXAMPLES", "300"))
def nested(ints: st.SearchStrategy[int]) -> st.SearchStrategy[object]:
    scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=True), st.text(max_size=8))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                        max_leaves=40)


values = nested(st.integers(-2**70, 2**70))       # JSON has no integer limit
packable = nested(st.integers(-2**63, 2**64 - 1))  # msgpack's integer range
near_valid = st.builds(lambda n, v, extra: {"inputs": [[v] * 784] * n, **extra}, st.integers(0, 3),
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
paths = st.sampled_from(["/predict", "/predict", "/v2/models/parm/infer", "/v2/models/other/infer", "/nope"])


@pytest.fixture(scope="module")
def fuzz_loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_no_request_gets_a_5xx(fuzz_loop) -> None:
    async def scenario() -> None:
        async with worker_servers(["builtin:linear"]) as ws:
            cfg = FrontendConfig(data=(("127.0.0.1", ws[0].port),), mode="none", deadline_ms=2000, health_interval_s=30)
            async with frontend(cfg) as c:
                statuses: list[int] = []

                @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
                @given(body=bodies, ctype=content_types, path=paths)
                def one(body: bytes, ctype: str, path: str) -> None:
                    fut = asyncio.run_coroutine_threadsafe(send(c, path, body, ctype), fuzz_loop)
                    status, payload = fut.result(timeout=30)
                    statuses.append(status)
                    # the only 5xx allowed are the designed ones: a deadline the client set too short
                    designed = status == 504 and isinstance(payload, dict) and payload.get("code") == "deadline_exceeded"
                    assert status < 500 or designed, (status, payload, body[:200], ctype, path)
                    assert isinstance(payload, dict) and ("error" in payload) == (status >= 400), payload

                await asyncio.to_thread(one)
                assert len(statuses) >= EXAMPLES and service_of(c).pending == 0

    fuzz_loop.run_until_complete(scenario())


async def send(c, path: str, body: bytes, ctype: str) -> tuple[int, object]:
    resp = await c.post(path, data=body, headers={"Content-Type": ctype} if ctype else {})
    raw = await resp.read()
    if resp.content_type == "application/msgpack":
        return resp.status, msgpack.unpackb(raw)
    return resp.status, json.loads(raw)
