"""The HTTP stack's floor for benchmarks/frontend_bench.py: an aiohttp server on uvloop that does the least
any frontend must (read the msgpack or JSON body, decode its tensor, answer a (1, 10) tensor in kind)
and nothing else, so its CPU per answer bounds from below what `parm serve` can cost on the same stack.

    .venv/bin/python benchmarks/aiohttp_floor.py --port 8090
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from aiohttp import web  # noqa: E402

from workers.protocol import decode_tensor, encode_tensor  # noqa: E402

ANSWER = np.zeros((1, 10), np.float32)  # what a 10-class model would return for one query


async def predict(request: web.Request) -> web.Response:
    raw = await request.read()
    if request.content_type == "application/json":  # frontend_bench --format json
        np.asarray(orjson.loads(raw)["inputs"], dtype=np.float32)  # (1, 1, 28, 28)
        return web.Response(body=orjson.dumps({"outputs": ANSWER.tolist()}), content_type="application/json")
    decode_tensor(msgpack.unpackb(raw)["inputs"])  # (1, 1, 28, 28): the parse every frontend pays
    return web.Response(body=msgpack.packb({"outputs": encode_tensor(ANSWER)}), content_type="application/msgpack")


async def ready(_request: web.Request) -> web.Response:
    return web.json_response({"ready": True, "coded": True})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    app = web.Application()
    app.add_routes([web.post("/predict", predict), web.get("/ready", ready)])
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:  # the frontend falls back the same way (--event-loop auto)
        loop = None
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
