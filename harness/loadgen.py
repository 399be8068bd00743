"""Open-loop Poisson load generator for ``parm bench``, run as its own process so it never shares
an event loop (or a GIL) with the frontend: real test images, msgpack bodies, one query each.

Protocol with harness/bench.py: the process loads its queries, prints ``ready``, reads one line
from stdin (the wall-clock epoch at which arrival 0 is due), sends, writes ``--out`` (npz of
per-query records) and prints ``done``. Latency is measured from each query's *scheduled*
time, so a late sender is charged to the system, not hidden (no coordinated omission).

Every request slot counts the responses it read (exactly one each, or 0 when lost), and a 503
records whether it carried ``Retry-After``. With ``--bad-frac F`` a malformed request (bad JSON,
wrong shape, NaN, in turn) is sent alongside a fraction F of the queries; each should get a 4xx,
and their statuses are tallied apart from the queries' records (in the npz's ``meta``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp
import msgpack
import numpy as np

from frontend.query import PATHS
from workers.protocol import ProtocolError, decode_tensor, encode_tensor

LOST = 0            # status of a query sent but never answered (connection error, timeout, cut off)
ANSWER_TYPE = "application/msgpack"
BAD_KINDS = ("bad_json", "wrong_shape", "nan")


@dataclass
class Records:
    """One slot per scheduled query; filled in as answers arrive."""

    sched_s: np.ndarray                      # (n,) due time relative to the start
    label: np.ndarray                        # (n,) int64 true class
    status: np.ndarray = field(init=False)   # HTTP status, LOST = no answer
    latency_ms: np.ndarray = field(init=False)
    lag_ms: np.ndarray = field(init=False)   # send time minus due time (the sender's own delay)
    degraded: np.ndarray = field(init=False)
    pred: np.ndarray = field(init=False)     # predicted class, -1 without an answer
    responses: np.ndarray = field(init=False)  # responses read for this request (must be exactly 1)
    retry_after: np.ndarray = field(init=False)  # a 503 that carried Retry-After
    path: np.ndarray = field(init=False)     # index into frontend.query.PATHS of the answer's path, -1: none
    bad: Counter[str] = field(default_factory=Counter)  # "kind:status" of the malformed requests
    errors: Counter[str] = field(default_factory=Counter)  # "status:code" of the queries' error answers

    def __post_init__(self) -> None:
        n = len(self.sched_s)
        self.status = np.full(n, LOST, np.int32)
        self.latency_ms = np.full(n, np.nan)
        self.lag_ms = np.full(n, np.nan)
        self.degraded = np.zeros(n, bool)
        self.pred = np.full(n, -1, np.int64)
        self.responses = np.zeros(n, np.int32)
        self.retry_after = np.zeros(n, bool)
        self.path = np.full(n, -1, np.int8)


PATH_INDEX = {name: i for i, name in enumerate(PATHS)}


def arrivals(rate: float, duration_s: float, seed: int) -> np.ndarray:
    """Poisson arrival times in [0, duration_s): the same for every mode given the seed."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * duration_s * 1.5) + 100)
    times = np.cumsum(gaps) - gaps[0]  # the first query is due at 0
    return times[times < duration_s]


async def send_on_schedule(sched: np.ndarray, base: float, start: Callable[[int, float], Iterable[Coroutine]],
                           drain_s: float) -> None:
    """Open loop: at ``base + sched[i]`` (the loop's clock) start the coroutines ``start(i, due)`` gives,
    whatever is still in flight; then wait up to ``drain_s`` for them and cancel the rest."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    for i, t in enumerate(sched):
        due = base + float(t)
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        for coro in start(i, due):
            task = asyncio.create_task(coro)
            tasks.add(task)  # strong reference until done
            task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=drain_s)
    for task in list(tasks):  # still unanswered after the drain: counted as lost
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _send_one(session: aiohttp.ClientSession, url: str, x: np.ndarray, i: int, rec: Records,
                    due: float, loop: asyncio.AbstractEventLoop) -> None:
    rec.lag_ms[i] = (loop.time() - due) * 1000
    body = msgpack.packb({"inputs": encode_tensor(x[None])})
    try:
        async with session.post(url, data=body, headers={"Content-Type": ANSWER_TYPE}) as resp:
            raw = await resp.read()
            status = resp.status
            rec.retry_after[i] = status == 503 and "Retry-After" in resp.headers
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return  # stays LOST: sent, never answered
    rec.responses[i] += 1
    rec.latency_ms[i] = (loop.time() - due) * 1000
    rec.status[i] = status
    if status == 200:
        _parse_answer(raw, i, rec)
    else:
        rec.errors[f"{status}:{_error_code(raw)}"] += 1


def _error_code(raw: bytes) -> str:
    """The "code" of a JSON error body ({"error", "code"}), "?" if there is none."""
    try:
        return str(json.loads(raw).get("code", "?"))
    except (ValueError, AttributeError):
        return "?"


def bad_body(kind: str, x: np.ndarray) -> tuple[bytes, str]:
    """A malformed request of the given kind -> (body, content type); each must get a 400."""
    flat = x.reshape(-1).tolist()
    if kind == "bad_json":
        return b'{"inputs": [[0.5, 0.25', "application/json"
    if kind == "wrong_shape":
        return json.dumps({"inputs": [flat[:-3]]}).encode(), "application/json"
    return json.dumps({"inputs": [[float("nan"), *flat[1:]]]}).encode(), "application/json"  # NaN literal


async def _send_bad(session: aiohttp.ClientSession, url: str, kind: str, x: np.ndarray, rec: Records) -> None:
    body, ctype = bad_body(kind, x)
    try:
        async with session.post(url, data=body, headers={"Content-Type": ctype}) as resp:
            await resp.read()
            rec.bad[f"{kind}:{resp.status}"] += 1
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        rec.bad[f"{kind}:{LOST}"] += 1


def _parse_answer(raw: bytes, i: int, rec: Records) -> None:
    try:
        answer = msgpack.unpackb(raw, raw=False)
        outputs = decode_tensor(answer["outputs"])  # (1, C)
    except (ValueError, KeyError, TypeError, ProtocolError, msgpack.ExtraData):
        rec.status[i] = 598  # a 200 whose body does not parse counts as failed
        return
    rec.pred[i] = int(np.argmax(outputs[0]))
    rec.degraded[i] = bool(answer["degraded"][0])
    path = answer.get("path", [None])[0]
    rec.path[i] = PATH_INDEX.get(path, -1)


async def run(url: str, x: np.ndarray, y: np.ndarray, sched: np.ndarray, start_epoch: float,
              timeout_s: float, drain_s: float, bad_frac: float = 0.0, seed: int = 0) -> Records:
    """Send query i (image i mod len(x)) at start_epoch + sched[i]; wait for answers; return records."""
    rec = Records(sched, y[np.arange(len(sched)) % len(y)])
    loop = asyncio.get_running_loop()
    base = loop.time() + (start_epoch - time.time())  # the start, on the loop's clock
    bad_at = np.flatnonzero(np.random.default_rng(seed + 7919).random(len(sched)) < bad_frac)
    bad_kind = dict(zip(bad_at.tolist(), (BAD_KINDS[j % len(BAD_KINDS)] for j in range(len(bad_at)))))
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        def start(i: int, due: float) -> list[Coroutine]:
            batch = [_send_one(session, url, x[i % len(x)], i, rec, due, loop)]
            if i in bad_kind:
                batch.append(_send_bad(session, url, bad_kind[i], x[i % len(x)], rec))
            return batch

        await send_on_schedule(sched, base, start, drain_s)
    return rec


def save(rec: Records, path: str, wall_s: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    meta = {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall_s, "malformed": malformed_summary(rec.bad),
            "error_codes": dict(sorted(rec.errors.items()))}
    np.savez(path, sched_s=rec.sched_s, label=rec.label, status=rec.status, latency_ms=rec.latency_ms,
             lag_ms=rec.lag_ms, degraded=rec.degraded, pred=rec.pred, responses=rec.responses,
             retry_after=rec.retry_after, path=rec.path, meta=json.dumps(meta))


def malformed_summary(bad: Counter[str]) -> dict[str, object]:
    """{"sent", "4xx", "other" (anything but a 4xx, lost included), "by": {"kind:status": n}}."""
    four = sum(n for key, n in bad.items() if 400 <= int(key.rsplit(":", 1)[1]) < 500)
    total = sum(bad.values())
    return {"sent": total, "4xx": four, "other": total - four, "by": dict(sorted(bad.items()))}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.loadgen", description=__doc__)
    p.add_argument("--url", required=True, help="frontend /predict URL")
    p.add_argument("--queries", required=True, help="npz with x (M, *S) float32 and y (M,) labels")
    p.add_argument("--rate", type=float, required=True, help="mean arrivals per second (Poisson)")
    p.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0, help="per-request client timeout (s)")
    p.add_argument("--drain", type=float, default=15.0, help="wait this long for answers after the last send")
    p.add_argument("--bad-frac", type=float, default=0.0, help="send a malformed request alongside this fraction of queries")
    p.add_argument("--out", required=True, help="where to write the per-query records (npz)")
    args = p.parse_args(argv)
    data = np.load(args.queries)
    x, y = np.ascontiguousarray(data["x"], np.float32), data["y"].astype(np.int64)
    sched = arrivals(args.rate, args.duration, args.seed)
    print("ready", flush=True)
    start_epoch = float(sys.stdin.readline())
    t0 = time.monotonic()
    rec = asyncio.run(run(args.url, x, y, sched, start_epoch, args.timeout, args.drain, args.bad_frac, args.seed))
    save(rec, args.out, time.monotonic() - t0)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
