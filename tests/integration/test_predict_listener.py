"""The lean predict listener (``parm serve --predict-port``, frontend.predict_listener) answers POST
/predict as the main aiohttp port does: the same answers, the same errors (status, code, message,
headers), one response per request in order on a kept-alive connection; and it copes with what
HTTP clients send (Expect: 100-continue, chunked bodies, pipelining, garbage, oversized bodies)."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgpack
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from frontend.config import FrontendConfig
from frontend.predict_listener import PredictListener
from tests.conftest import frontend, service_of, worker_servers
from workers.protocol import decode_tensor, encode_tensor

QUERY = np.linspace(0, 1, 784, dtype=np.float32).reshape(1, 1, 28, 28)
JSON = "application/json"
MSGPACK = "application/msgpack"
LIMIT = 64 * 1024


@asynccontextmanager
async def both(**cfg_kw: Any) -> AsyncIterator[tuple[TestClient, str, PredictListener]]:
    """A coded frontend on real in-process workers, with the lean listener on the same service:
    (aiohttp test client, the listener's base URL, the listener)."""
    async with worker_servers(["builtin:linear", "builtin:linear", "builtin:linear:parity_k=2"]) as ws:
        addrs = [("127.0.0.1", w.port) for w in ws]
        cfg = FrontendConfig(data=tuple(addrs[:2]), parity=tuple(addrs[2:]), k=2, code="sum", mode="coded",
                             max_body_bytes=LIMIT, predict_port=0, **cfg_kw)
        async with frontend(cfg) as client:
            lean = PredictListener(service_of(client))
            port = await lean.start("127.0.0.1", 0)
            try:
                yield client, f"http://127.0.0.1:{port}", lean
            finally:
                await lean.close()


async def via_main(client: TestClient, body: bytes, ctype: str, path: str = "/predict",
                   headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    resp = await client.post(path, data=body, headers={"Content-Type": ctype, **(headers or {})})
    return resp.status, await resp.read(), resp.headers


async def via_lean(session: aiohttp.ClientSession, url: str, body: bytes, ctype: str, path: str = "/predict",
                   headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    async with session.post(url + path, data=body, headers={"Content-Type": ctype, **(headers or {})}) as resp:
        return resp.status, await resp.read(), resp.headers


def outputs(status: int, body: bytes, ctype: str) -> Any:
    assert status == 200, body
    if ctype == MSGPACK:
        doc = msgpack.unpackb(body)
        return decode_tensor(doc["outputs"]), doc["degraded"]
    doc = json.loads(body)
    return np.asarray(doc["outputs"], np.float32), doc["degraded"]


async def test_the_same_answers_in_msgpack_and_json_as_the_main_port() -> None:
    async with both() as (client, url, _), aiohttp.ClientSession() as session:
        for ctype, body in ((MSGPACK, msgpack.packb({"inputs": encode_tensor(QUERY)})),
                            (JSON, json.dumps({"inputs": QUERY.tolist(), "deadline_ms": 5000}).encode())):
            main_out, main_deg = outputs(*(await via_main(client, body, ctype))[:2], ctype)
            lean_out, lean_deg = outputs(*(await via_lean(session, url, body, ctype))[:2], ctype)
            assert lean_out.shape == (1, 10)
            np.testing.assert_array_equal(lean_out, main_out)
            assert lean_deg == main_deg == [False]
        status, body, _ = await via_lean(session, url, json.dumps({"inputs": QUERY.tolist()}).encode(), JSON,
                                         path="/predict?deadline_ms=5000")
        assert status == 200


BAD = [  # (what, body, content type, path)
    ("unsupported media type", b"x", "text/plain", "/predict"),
    ("unsupported media type, with parameters", b"x", "Text/Plain; charset=utf-8", "/predict"),
    ("malformed JSON", b"{not json", JSON, "/predict"),
    ("no inputs", b"{}", JSON, "/predict"),
    ("wrong shape", json.dumps({"inputs": [[1.0, 2.0]]}).encode(), JSON, "/predict"),
    ("NaN", msgpack.packb({"inputs": [[float("nan")] * 784]}), MSGPACK, "/predict"),
    ("empty", json.dumps({"inputs": []}).encode(), JSON, "/predict"),
    ("bad deadline", json.dumps({"inputs": [[0.0] * 784], "deadline_ms": -1}).encode(), JSON, "/predict"),
    ("bad deadline in the query", json.dumps({"inputs": [[0.0] * 784]}).encode(), JSON, "/predict?deadline_ms=x"),
    ("too many queries", json.dumps({"inputs": [[0.0] * 784] * 3}).encode(), JSON, "/predict"),
    ("body over the limit", b"[" + b"0," * LIMIT + b"0]", JSON, "/predict"),
]


async def test_every_refusal_is_the_main_ports_status_code_and_message() -> None:
    async with both(max_queries_per_request=2) as (client, url, _), aiohttp.ClientSession() as session:
        for what, body, ctype, path in BAD:
            main_status, main_body, _ = await via_main(client, body, ctype, path)
            lean_status, lean_body, _ = await via_lean(session, url, body, ctype, path)
            assert 400 <= main_status < 500, what
            assert (lean_status, json.loads(lean_body)) == (main_status, json.loads(main_body)), what


async def test_other_paths_and_methods_are_refused_with_json() -> None:
    async with both() as (_, url, _), aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics") as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "not_found"
        async with session.get(url + "/predict") as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "POST"
            assert (await resp.json())["code"] == "method_not_allowed"


async def test_a_token_is_checked_as_on_the_main_port() -> None:
    body = msgpack.packb({"inputs": encode_tensor(QUERY)})
    async with both(auth_token="s3cret") as (client, url, _), aiohttp.ClientSession() as session:
        main = await via_main(client, body, MSGPACK)
        lean = await via_lean(session, url, body, MSGPACK)
        assert lean[0] == main[0] == 401
        assert lean[2]["WWW-Authenticate"] == main[2]["WWW-Authenticate"]
        assert lean[2]["Content-Type"] == main[2]["Content-Type"]
        # checked before the route, as the main port's middleware runs before routing
        assert (await via_lean(session, url, body, MSGPACK, path="/nowhere"))[0] == 401
        assert (await via_main(client, body, MSGPACK, path="/nowhere"))[0] == 401
        ok = await via_lean(session, url, body, MSGPACK, headers={"Authorization": "Bearer s3cret"})
        assert ok[0] == 200


# -- raw HTTP on a socket -----------------------------------------------------------------------

def raw_request(body: bytes, extra: str = "", ctype: str = MSGPACK) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"{extra}\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 10)
    return status, headers, body


@asynccontextmanager
async def connection(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()


async def assert_endless_head_refused(url: str, start: bytes) -> None:
    """``start``, then a header value that goes on past the head limit: a 400 saying so."""
    async with connection(url) as (reader, writer):
        writer.write(start)
        for _ in range(20):  # 1.25 MiB, past MAX_HEAD_BYTES
            writer.write(b"a" * 65536)
        status, _, body = await read_response(reader)
        assert status == 400 and "headers over" in json.loads(body)["error"]


async def test_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    good = msgpack.packb({"inputs": encode_tensor(QUERY)})
    async with both() as (_, url, _), connection(url) as (reader, writer):
        # good, bad, good in one write: three responses, in that order, the connection kept
        writer.write(raw_request(good) + raw_request(b"{", ctype=JSON) + raw_request(good))
        statuses = [(await read_response(reader))[0] for _ in range(3)]
        assert statuses == [200, 400, 200]
        writer.write(raw_request(good, "Connection: close\r\n"))
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""  # then closed


async def test_many_pipelined_requests_unread_until_the_end_are_all_answered_in_order() -> None:
    """More than PIPELINE_MAX at once: reading pauses and resumes, nothing is lost or reordered."""
    bodies = [msgpack.packb({"inputs": encode_tensor(QUERY * (i % 7))}) for i in range(120)]
    async with both() as (_, url, _), connection(url) as (reader, writer):
        writer.write(b"".join(raw_request(b) for b in bodies) + raw_request(b"{", ctype=JSON))
        answers = [await read_response(reader) for _ in range(121)]
    assert [a[0] for a in answers] == [200] * 120 + [400]
    first = decode_tensor(msgpack.unpackb(answers[1][2])["outputs"])
    for i, (_, _, body) in enumerate(answers[:120]):  # the same input gives the same output: in order
        assert np.array_equal(decode_tensor(msgpack.unpackb(body)["outputs"]),
                              decode_tensor(msgpack.unpackb(answers[i % 7][2])["outputs"])), i
    assert not np.array_equal(first, decode_tensor(msgpack.unpackb(answers[2][2])["outputs"]))


async def test_head_upgrade_and_oversized_heads() -> None:
    async with both() as (_, url, _):
        async with connection(url) as (reader, writer):  # HEAD: the 405's headers and no body
            writer.write(b"HEAD /predict HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
            assert head.startswith("HTTP/1.1 405")
            assert (await read_response(reader))[0] == 404  # the next response starts right after the head
        async with connection(url) as (reader, writer):  # an upgrade: one refusal, then the end
            good = msgpack.packb({"inputs": encode_tensor(QUERY)})
            writer.write(raw_request(good, "Connection: Upgrade\r\nUpgrade: h2c\r\n"))
            status, headers, _ = await read_response(reader)
            assert status == 400 and headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 10) == b""
        await assert_endless_head_refused(url, b"POST /predict HTTP/1.1\r\nX-Long: ")  # a header that never ends


async def test_a_half_closed_client_gets_its_answer() -> None:
    good = msgpack.packb({"inputs": encode_tensor(QUERY)})
    async with both() as (_, url, _), connection(url) as (reader, writer):
        writer.write(raw_request(good) + raw_request(good))
        writer.write_eof()  # shutdown(SHUT_WR): nothing more will come
        assert [(await read_response(reader))[0] for _ in range(2)] == [200, 200]
        assert await asyncio.wait_for(reader.read(), 10) == b""


async def test_trailers_are_not_headers_and_cannot_grow_without_bound() -> None:
    good = msgpack.packb({"inputs": encode_tensor(QUERY)})
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = f"{len(good):x}\r\n".encode() + good + b"\r\n0\r\n"
    async with both() as (_, url, _):
        async with connection(url) as (reader, writer):  # a Content-Type in the trailer does not count: 415
            writer.write(head + chunk + f"Content-Type: {MSGPACK}\r\n\r\n".encode())
            status, _, body = await read_response(reader)
            assert status == 415 and "application/octet-stream" in json.loads(body)["error"]
        await assert_endless_head_refused(url, head + chunk + b"X-Trailer: ")  # a trailer that never ends


async def test_expect_continue_and_chunked_bodies() -> None:
    good = msgpack.packb({"inputs": encode_tensor(QUERY)})
    async with both() as (_, url, _), connection(url) as (reader, writer):
        writer.write(raw_request(b"", "Expect: 100-continue\r\n").replace(b"Content-Length: 0",
                                                                           f"Content-Length: {len(good)}".encode()))
        assert (await read_response(reader))[0] == 100
        writer.write(good)
        assert (await read_response(reader))[0] == 200
        half = len(good) // 2
        chunked = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {MSGPACK}\r\nTransfer-Encoding: chunked\r\n\r\n"
                   f"{half:x}\r\n").encode() + good[:half] + f"\r\n{len(good) - half:x}\r\n".encode() + good[half:] + b"\r\n0\r\n\r\n"
        writer.write(chunked)
        assert (await read_response(reader))[0] == 200


async def test_garbage_and_oversized_bodies_get_an_answer_and_a_closed_connection() -> None:
    async with both() as (client, url, lean):
        async with connection(url) as (reader, writer):
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            status, _, body = await read_response(reader)
            assert status == 400 and json.loads(body)["code"] == "bad_request"
            assert await asyncio.wait_for(reader.read(), 10) == b""
        async with connection(url) as (reader, writer):  # declared too large: refused before the body is sent
            writer.write(raw_request(b"", ctype=JSON).replace(b"Content-Length: 0", f"Content-Length: {LIMIT + 1}".encode()))
            status, _, body = await read_response(reader)
            assert status == 413 and json.loads(body)["code"] == "payload_too_large"
            assert await asyncio.wait_for(reader.read(), 10) == b""
        async with connection(url) as (reader, writer):  # chunked, past the limit as it arrives
            writer.write(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {JSON}\r\nTransfer-Encoding: chunked\r\n\r\n"
                         .encode() + (f"{8192:x}\r\n".encode() + b"0" * 8192 + b"\r\n") * (LIMIT // 8192 + 1))
            assert (await read_response(reader))[0] == 413
        assert service_of(client).pending == 0
        await asyncio.sleep(0.05)
        assert not lean.connections  # every one of them closed


async def test_closing_the_listener_answers_the_request_in_flight_first() -> None:
    body = msgpack.packb({"inputs": encode_tensor(QUERY)})
    async with both() as (_, url, lean), aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(via_lean(session, url, body, MSGPACK))
        while not any(c.task is not None for c in lean.connections):  # parsed and being answered
            await asyncio.sleep(0.001)
        await lean.close(grace_s=5.0)
        status, _, _ = await pending
        assert status == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await via_lean(session, url, body, MSGPACK)
