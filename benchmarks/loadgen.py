"""Load generator for the frontend benchmark, run as its own process: open-loop Poisson arrivals (or closed
loop), single-query requests to the frontend over HTTP (msgpack or JSON) or straight to a worker over its TCP
protocol (WorkerClient); prints one JSON summary line (rates, status counts, latency percentiles, own CPU).

    .venv/bin/python benchmarks/loadgen.py --url http://127.0.0.1:8080/predict --rate 300 --duration 10
    .venv/bin/python benchmarks/loadgen.py --worker 127.0.0.1:9001 --closed 32 --duration 5
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import msgpack  # noqa: E402
import numpy as np  # noqa: E402

from frontend.config import parse_address  # noqa: E402
from harness.loadgen import arrivals, send_on_schedule  # noqa: E402
from workers.protocol import encode_tensor  # noqa: E402

QUERY_SHAPE = (1, 28, 28)
Status = int | str
Send = Callable[[], Awaitable[Status]]  # one request -> HTTP status (200 for a worker reply) or error class name


@dataclass
class Record:
    scheduled: float  # when the request was due (open loop) or issued (closed loop)
    sent: float
    done: float
    status: Status


# -- senders ------------------------------------------------------------------------------------

def make_body(fmt: str, seed: int) -> tuple[bytes, str]:
    x = np.random.default_rng(seed).random((1, *QUERY_SHAPE), dtype=np.float32)
    if fmt == "json":
        return json.dumps({"inputs": x.tolist()}).encode(), "application/json"
    return msgpack.packb({"inputs": encode_tensor(x)}), "application/msgpack"


def http_sender(session: aiohttp.ClientSession, url: str, body: bytes, ctype: str) -> Send:
    headers = {"Content-Type": ctype}

    async def send() -> Status:
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return type(exc).__name__
    return send


def worker_sender(clients: list[Any], inputs: np.ndarray) -> Send:
    """Round-robin over the workers, as the frontend's none mode spreads queries over its data workers."""
    from frontend.errors import WorkerError
    turn = itertools.cycle(clients)

    async def send() -> Status:
        try:
            await next(turn).infer(inputs)
            return 200
        except WorkerError as exc:
            return type(exc).__name__
    return send


# -- load shapes --------------------------------------------------------------------------------

async def _timed(send: Send, scheduled: float, out: list[Record]) -> None:
    loop = asyncio.get_running_loop()
    sent = loop.time()
    status = await send()
    out.append(Record(scheduled, sent, loop.time(), status))


async def open_loop(send: Send, rate: float, duration: float, seed: int) -> tuple[list[Record], float]:
    """Poisson arrivals at ``rate``/s for ``duration`` s (parm bench's schedule and open loop, harness.loadgen),
    each request sent at its time whatever is in flight."""
    records: list[Record] = []
    start = asyncio.get_running_loop().time()
    await send_on_schedule(arrivals(rate, duration, seed), start, lambda i, due: [_timed(send, due, records)], 30.0)
    return records, start


async def closed_loop(send: Send, concurrency: int, duration: float) -> tuple[list[Record], float]:
    """``concurrency`` clients, each sending its next request when the previous one is answered."""
    loop = asyncio.get_running_loop()
    records: list[Record] = []
    start = loop.time()

    async def client() -> None:
        while loop.time() < start + duration:
            await _timed(send, loop.time(), records)
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return records, start


# -- summary ------------------------------------------------------------------------------------

def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summarize(records: list[Record], start: float, warmup: float, duration: float, cpu0: float) -> dict[str, Any]:
    """Stats over requests due after the warm-up; latency is from the due time (no coordinated omission)."""
    kept = [r for r in records if start + warmup <= r.scheduled < start + duration]
    window = max(duration - warmup, 1e-9)
    ok = [r for r in kept if r.status == 200]
    lat = np.array([r.done - r.scheduled for r in ok]) * 1000.0
    service = np.array([r.done - r.sent for r in ok]) * 1000.0
    late = np.array([r.sent - r.scheduled for r in kept]) * 1000.0
    pct = (lambda a, q: float(np.percentile(a, q)) if len(a) else float("nan"))
    return {"requests": len(kept), "ok": len(ok), "ok_total": sum(1 for r in records if r.status == 200), "status": dict(Counter(str(r.status) for r in kept)),
            "offered_rate": len(kept) / window, "achieved_rate": len(ok) / window,
            "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
            "mean_ms": float(lat.mean()) if len(lat) else float("nan"), "max_ms": pct(lat, 100),
            "service_p50_ms": pct(service, 50), "service_p99_ms": pct(service, 99),
            "send_lag_p99_ms": pct(late, 99), "loadgen_cpu_s": cpu_now() - cpu0}  # load only, not start-up


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.worker:
        return await run_worker(args)
    body, ctype = make_body(args.format, args.seed)
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    connector = aiohttp.TCPConnector(limit=args.pool)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return await drive(args, http_sender(session, args.url, body, ctype))


async def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    from frontend.worker_client import WorkerClient
    clients = [WorkerClient(*parse_address(a), "data") for a in args.worker.split(",") if a.strip()]
    for client in clients:
        client.start()
    try:
        for client in clients:
            if not await client.wait_connected(5.0):
                raise SystemExit(f"loadgen: cannot connect to worker {client.name}")
        inputs = np.random.default_rng(args.seed).random((1, *QUERY_SHAPE), dtype=np.float32)
        return await drive(args, worker_sender(clients, inputs))
    finally:
        for client in clients:
            await client.close()


async def drive(args: argparse.Namespace, send: Send) -> dict[str, Any]:
    total = args.duration + args.warmup
    cpu0 = cpu_now()
    if args.closed:
        records, start = await closed_loop(send, args.closed, total)
    else:
        records, start = await open_loop(send, args.rate, total, args.seed)
    summary = summarize(records, start, args.warmup, total, cpu0)
    summary.update(target=args.worker or args.url, load=f"closed:{args.closed}" if args.closed else f"poisson:{args.rate:g}",
                   format="worker-tcp" if args.worker else args.format, duration_s=args.duration, warmup_s=args.warmup)
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="frontend POST /predict URL")
    target.add_argument("--worker", help="worker HOST:PORT[,...], called directly over its TCP protocol (round-robin)")
    shape = p.add_mutually_exclusive_group(required=True)
    shape.add_argument("--rate", type=float, help="open loop: Poisson arrivals per second")
    shape.add_argument("--closed", type=int, help="closed loop: this many requests always in flight")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (after the warm-up)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds sent but not counted")
    p.add_argument("--format", choices=["msgpack", "json"], default="msgpack")
    p.add_argument("--pool", type=int, default=256, help="HTTP connection pool size")
    p.add_argument("--timeout-s", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        p.error("--rate must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    summary = asyncio.run(run(parse_args(argv)))
    summary["wall_s"] = time.perf_counter() - t0
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
