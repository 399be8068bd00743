"""The floor of a leaner HTTP layer, for comparison with benchmarks/aiohttp_floor.py: the same work (read the
msgpack or JSON body, decode its tensor, answer a (1, 10) tensor in kind) on a bare asyncio.Protocol with
httptools' parser (llhttp, as uvicorn uses) on uvloop: no request objects, routing or middleware. What
`parm serve` could save per answer by leaving aiohttp's server; a measurement, not a server to deploy
(it answers nothing but these two routes, with no limits): `parm serve --predict-port` is the
serving version (frontend.predict_listener).

    .venv/bin/python benchmarks/protocol_floor.py --port 8091
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httptools
import msgpack
import numpy as np
import orjson

from workers.protocol import decode_tensor, encode_tensor

ANSWER = np.zeros((1, 10), np.float32)  # what a 10-class model would return for one query
READY = orjson.dumps({"ready": True, "coded": True})


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def answer(url: bytes, content_type: bytes, body: bytes) -> bytes:
    """One request's full response: the same parse and answer as aiohttp_floor.predict."""
    path = url.partition(b"?")[0]
    if path == b"/ready":
        return _response(b"200 OK", b"application/json", READY)
    if path != b"/predict":
        return _response(b"404 Not Found", b"text/plain", b"not found")
    if content_type.startswith(b"application/json"):  # frontend_bench --format json
        np.asarray(orjson.loads(body)["inputs"], dtype=np.float32)  # (1, 1, 28, 28)
        return _response(b"200 OK", b"application/json", orjson.dumps({"outputs": ANSWER.tolist()}))
    decode_tensor(msgpack.unpackb(body)["inputs"])  # (1, 1, 28, 28): the parse every frontend pays
    return _response(b"200 OK", b"application/msgpack", msgpack.packb({"outputs": encode_tensor(ANSWER)}))


class FloorProtocol(asyncio.Protocol):
    """One keep-alive connection: httptools calls back per URL, header and body chunk; each complete
    request is answered in the same loop turn (responses of pipelined requests go out in order)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url, self.content_type, self.body = b"", b"", bytearray()
        self.closing = False  # Connection: close answered, or a parse error: later requests are not served

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # an upgrade is not served either
            assert self.transport is not None
            self.transport.write(_response(b"400 Bad Request", b"text/plain", b"bad request"))
            self.closing = True
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.content_type, self.body = b"", b"", bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value.lower()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.closing:  # a request pipelined behind one that closed the connection
            return
        self.transport.write(answer(self.url, self.content_type, bytes(self.body)))
        if not self.parser.should_keep_alive():
            self.closing = True
            self.transport.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # as aiohttp_floor: the frontend falls back the same way (--event-loop auto)
        asyncio.run(serve(args.port))
    else:
        uvloop.run(serve(args.port))


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(FloorProtocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    main()
