"""How long parsing a /predict JSON body blocks the event loop: stdlib json vs orjson, on the loop,
in a thread (run_in_executor) or in a process; and the per-request cost of a small 1-query body.

    .venv/bin/python benchmarks/body_parse_loop.py [--repeat 5]   -> benchmarks/results/body_parse.json
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "body_parse.json"
TICK_S = 0.001


def parse_json(raw: bytes) -> np.ndarray:
    return np.asarray(json.loads(raw)["inputs"], dtype=np.float32)


def parse_orjson(raw: bytes) -> np.ndarray:
    return np.asarray(orjson.loads(raw)["inputs"], dtype=np.float32)


def body(n: int, seed: int = 0) -> bytes:
    """A /predict body of n Fashion-MNIST-sized queries of random float32 pixels, as a client sends it."""
    x = np.random.default_rng(seed).random((n, 784), dtype=np.float32)
    return json.dumps({"inputs": x.tolist()}).encode()


async def blocked(run: Callable[[], Any]) -> tuple[float, float]:
    """(longest gap between 1 ms ticks minus the tick, wall time) while ``run()`` is awaited, in ms."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(TICK_S)
            now = loop.time()
            gaps.append(now - last - TICK_S)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)  # the ticker is running before the parse starts
    t0 = time.perf_counter()
    await run()
    wall = time.perf_counter() - t0
    done.set()
    await tick
    return max(gaps) * 1000, wall * 1000


async def big_body_figures(raw: bytes, repeat: int) -> dict[str, dict[str, float]]:
    loop = asyncio.get_running_loop()
    threads = concurrent.futures.ThreadPoolExecutor(1)
    procs = concurrent.futures.ProcessPoolExecutor(1)
    await loop.run_in_executor(procs, parse_orjson, body(1))  # start the process outside the figures

    async def inline(f: Callable[[bytes], np.ndarray]) -> None:
        f(raw)

    variants: dict[str, Callable[[], Any]] = {
        "json_on_loop": lambda: inline(parse_json),
        "orjson_on_loop": lambda: inline(parse_orjson),
        "json_in_thread": lambda: loop.run_in_executor(threads, parse_json, raw),
        "orjson_in_thread": lambda: loop.run_in_executor(threads, parse_orjson, raw),
        "orjson_in_process": lambda: loop.run_in_executor(procs, parse_orjson, raw),
    }
    out: dict[str, dict[str, float]] = {}
    for name, run in variants.items():
        runs = [await blocked(run) for _ in range(repeat)]
        out[name] = {"loop_blocked_ms_median": round(statistics.median(r[0] for r in runs), 1),
                     "loop_blocked_ms_max": round(max(r[0] for r in runs), 1),
                     "wall_ms_median": round(statistics.median(r[1] for r in runs), 1)}
        print(f"{name:>18}: loop blocked {out[name]['loop_blocked_ms_median']:7.1f} ms median "
              f"(max {out[name]['loop_blocked_ms_max']:.1f}), wall {out[name]['wall_ms_median']:.1f} ms", flush=True)
    threads.shutdown()
    procs.shutdown()
    return out


async def small_body_figures(raw: bytes, n: int) -> dict[str, float]:
    """Microseconds per parse of a 1-query body: inline json, inline orjson, orjson via a thread."""
    loop = asyncio.get_running_loop()
    threads = concurrent.futures.ThreadPoolExecutor(1)
    out: dict[str, float] = {}
    for name, f in (("json_on_loop", parse_json), ("orjson_on_loop", parse_orjson)):
        t0 = time.perf_counter()
        for _ in range(n):
            f(raw)
        out[name] = round((time.perf_counter() - t0) / n * 1e6, 1)
    t0 = time.perf_counter()
    for _ in range(n):
        await loop.run_in_executor(threads, parse_orjson, raw)
    out["orjson_in_thread"] = round((time.perf_counter() - t0) / n * 1e6, 1)
    threads.shutdown()
    for name, us in out.items():
        print(f"1-query body, {name:>16}: {us:6.1f} us per request", flush=True)
    return out


async def main(repeat: int) -> None:
    raw = body(1024)
    small = body(1)
    print(f"max-size body: 1024 x 784 floats, {len(raw):,} bytes; 1-query body: {len(small):,} bytes")
    report = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "orjson": orjson.__version__, "big_body_bytes": len(raw), "repeat": repeat,
              "big_body": await big_body_figures(raw, repeat),
              "small_body_us": await small_body_figures(small, 2000)}
    write_json(RESULTS, report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    asyncio.run(main(parser.parse_args().repeat))
