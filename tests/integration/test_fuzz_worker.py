"""Property-based fuzzing of the worker protocol: whatever bytes a peer sends (garbage, truncated
or oversized frames, valid frames of random maps, unknown kinds, malformed tensors), the worker
answers with an error or closes that connection only, and keeps serving a well-behaved client.
PARM_FUZZ_EXAMPLES sets the count (CI: a few hundred)."""
from __future__ import annotations

import asyncio
import os
import struct

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frontend.worker_client import WorkerClient
from tests.conftest import worker_servers
from workers.protocol import encode_tensor, pack

EXAMPLES = int(os.environ.get("PARM_FUZZ_EXAMPLES", "300"))
MAX_FRAME = 4096
leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=8),
                   st.binary(max_size=64))
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                      max_leaves=20)
tensors = st.fixed_dictionaries({"dtype": st.sampled_from(["float32", "float64", "int8", "complex64", "x"]),
                                 "shape": st.lists(st.integers(-2, 2**40), max_size=5),
                                 "data": st.binary(max_size=64)})
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["infer", "ping", "fault", "result", "hello", "auth", "nope"]), "id": st.integers(0, 2**31)},
    optional={"inputs": st.one_of(tensors, values), "spec": st.one_of(st.text(max_size=20), values)})


def framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


wire = st.one_of(
    st.binary(max_size=200),                                                       # raw garbage
    values.map(lambda v: framed(msgpack.packb(v))),                                # valid frame, any value
    messages.map(lambda m: framed(msgpack.packb(m))),                              # plausible requests
    st.binary(max_size=50).map(lambda b: struct.pack(">I", MAX_FRAME * 8) + b),    # oversized header
    messages.map(lambda m: framed(msgpack.packb(m))[:-1]),                         # truncated, then EOF
)


def test_worker_survives_any_bytes() -> None:
    async def scenario() -> None:
        async with worker_servers(["builtin:linear"], max_frame=MAX_FRAME) as ws:
            port = ws[0].port
            good = WorkerClient("127.0.0.1", port, max_frame=MAX_FRAME)
            good.start()
            assert await good.wait_connected(5)
            loop = asyncio.get_running_loop()

            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
            @given(blob=wire)
            def one(blob: bytes) -> None:
                asyncio.run_coroutine_threadsafe(poke(port, blob), loop).result(timeout=20)
                out = asyncio.run_coroutine_threadsafe(good.infer(np.zeros((1, 1, 28, 28), np.float32)), loop)
                assert out.result(timeout=20).shape == (1, 10)  # the well-behaved client is still served

            await asyncio.to_thread(one)
            await good.close()

    asyncio.run(scenario())


async def poke(port: int, blob: bytes) -> None:
    """Send ``blob`` on a fresh connection, read whatever comes back until close or a short pause."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(blob)
        writer.write_eof()
        await writer.drain()
        while await asyncio.wait_for(reader.read(65536), 2.0):
            pass
    except (ConnectionError, asyncio.TimeoutError):
        pass  # a reset is a fine answer to garbage
    finally:
        writer.close()


def test_a_valid_request_after_garbage_on_another_connection_still_works() -> None:
    async def scenario() -> None:
        async with worker_servers(["builtin:linear"]) as ws:
            await poke(ws[0].port, b"\xff" * 100)
            reader, writer = await asyncio.open_connection("127.0.0.1", ws[0].port)
            writer.write(pack({"type": "infer", "id": 7, "inputs": encode_tensor(np.zeros((1, 1, 28, 28), np.float32))}))
            await writer.drain()
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert msgpack.unpackb(data[4:])["type"] == "result"
            writer.close()
    asyncio.run(scenario())
