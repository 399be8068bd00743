"""CPU per query of the serving core alone (frontend.service.Service: admission, grouping, dispatch,
decode policy, answers), in one process, with no HTTP and no sockets: in-process workers answer each
request on the next loop turn. What it shows is the frontend's own Python per query, free of the
kernel and of the other processes that share this machine (benchmarks/frontend_bench.py measures the
whole path). Modes interleaved over rounds; medians.

    .venv/bin/python benchmarks/core_cost.py [--queries 20000] [--rounds 5] [--profile coded]
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from frontend.config import FrontendConfig
from frontend.errors import WorkerUnavailable
from frontend.pool import WorkerPool
from frontend.service import Service
from frontend.worker_base import WorkerBase

SHAPE = [1, 28, 28]
INFO = {"name": "linear", "model_id": "core-cost", "input_shape": SHAPE, "num_classes": 10}


class LoopWorker(WorkerBase):
    """Answers each request on the next loop turn with a fixed (B, 10) output: no model, no wire."""

    def __init__(self, port: int, role: str, info: dict[str, Any]) -> None:
        super().__init__(role, connect_timeout_s=1.0, health_interval_s=3600.0, health_timeout_s=1.0)
        self.host, self.port = "loop", port
        self.info, self.probe_ok = dict(info), True
        self._out = np.zeros((1, 10), np.float32)

    @property
    def name(self) -> str:
        return f"loop-{self.role}-{self.port}"

    def start(self) -> None:
        self._mark_connected()

    def send_infer(self, inputs: np.ndarray, done: Any) -> Any:
        if not self.connected:
            raise WorkerUnavailable(self.name)
        self._outstanding += 1
        handle = _Handle(done)
        asyncio.get_running_loop().call_soon(self._reply, handle)
        return handle

    def _reply(self, handle: _Handle) -> None:
        self._outstanding -= 1
        self._record_reply(handle.sent_at)
        if handle.done is not None:
            self._record_result()
            handle.done(self._out, None)

    async def infer(self, inputs: np.ndarray) -> np.ndarray:  # a frontend without send_infer calls this
        self._outstanding += 1
        await asyncio.sleep(0)  # one loop turn, as send_infer's reply takes
        self._outstanding -= 1
        self._record_reply(time.monotonic())
        self._record_result()
        return self._out


class _Handle:
    __slots__ = ("done", "sent_at")

    def __init__(self, done: Any) -> None:
        self.done: Any = done
        self.sent_at = time.monotonic()

    def abandon(self) -> None:
        self.done = None


async def run_mode(mode: str, queries: int, concurrency: int, profile: cProfile.Profile | None) -> float:
    """CPU seconds per answered query through a fresh Service in ``mode`` (none: 2 data workers; coded: 2 + 1)."""
    cfg = FrontendConfig(data=(("loop", 1), ("loop", 2)), parity=(("loop", 3),) if mode == "coded" else (),
                         k=2, code="sum", mode=mode)
    parity_info = {**INFO, "name": "linear-parity", "kind": "parity",
                   "meta": {"k": 2, "code": "sum", "base_id": "core-cost", "parity_index": 0}}
    data = [LoopWorker(p, "data", INFO) for p in (1, 2)]
    parity = [LoopWorker(3, "parity", parity_info)] if mode == "coded" else []
    service = Service(cfg, WorkerPool(cfg, (data, parity)))  # type: ignore[arg-type]
    await service.start()
    x = np.random.default_rng(0).random((1, *SHAPE), dtype=np.float32)
    left = queries

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await service.submit(x)
    try:
        t0 = time.process_time()
        if profile is not None:
            profile.enable()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        if profile is not None:
            profile.disable()
        cpu = time.process_time() - t0
    finally:
        await service.stop(drain_timeout_s=1.0)
    assert service.stats.answered == queries, service.stats
    assert mode != "coded" or service.stats.groups_coded >= queries // 2 - concurrency, service.stats
    return cpu / queries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--profile", choices=["none", "coded"], default=None, help="print a cProfile of one more run")
    p.add_argument("--modes", default="none,coded", help="comma-separated (none, coded)")
    args = p.parse_args(argv)
    if args.event_loop == "uvloop":
        import uvloop
        new_loop = uvloop.new_event_loop
    else:
        new_loop = asyncio.new_event_loop
    runs: dict[str, list[float]] = {mode: [] for mode in args.modes.split(",")}
    for _ in range(args.rounds):
        for mode, values in runs.items():
            with asyncio.Runner(loop_factory=new_loop) as runner:
                values.append(runner.run(run_mode(mode, args.queries, args.concurrency, None)))
    for mode, values in runs.items():
        us = [v * 1e6 for v in values]
        print(f"{mode:<6} {statistics.median(us):7.1f} us of CPU per query (median of {len(us)}; "
              f"{min(us):.1f}-{max(us):.1f}; {args.queries} queries each, {args.concurrency} in flight, {args.event_loop})")
    if len(runs) == 2:
        print(f"coded / none: {statistics.median(runs['coded']) / statistics.median(runs['none']):.2f}")
    if args.profile:
        prof = cProfile.Profile(time.process_time)
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(run_mode(args.profile, args.queries, args.concurrency, prof))
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
