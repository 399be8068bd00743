"""``parm demo``: the whole system on real data in a few minutes, on one machine.

Trains (or reuses cached) a Fashion-MNIST base MLP and its k=2 parity model, serves them with a
local cluster (real worker processes, the real HTTP frontend), sends real test images, stalls
one data worker, and prints the accuracy of degraded (decoded) answers beside the base model's.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from frontend.app import create_app
from frontend.config import FrontendConfig
from frontend.worker_client import WorkerClient
from workers.cluster import LocalCluster, cluster_specs, free_port


@dataclass
class Phase:
    name: str
    outputs: np.ndarray      # (N, C)
    degraded: np.ndarray     # (N,) bool
    latencies_ms: np.ndarray  # (requests,)
    errors: int


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="train or reuse models, serve them, stall a worker, report accuracy")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--code", default="concat")
    p.add_argument("--queries", type=int, default=2000, help="test images sent per phase")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--cache-dir", default="runs/demo", help="where trained models are kept and reused")
    p.add_argument("--time-budget", type=float, default=90.0, help="seconds of parity training if not cached")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--decode-policy", default=None, choices=("adaptive", "eager", "grace"),
                   help="when to decode (parm serve --help); unset: grace if --decode-grace-ms > 0, else adaptive")
    p.add_argument("--decode-grace-ms", type=float, default=0.0, help="grace policy: the wait before decoding")
    p.set_defaults(func=lambda args: asyncio.run(run_demo(args)))


async def run_demo(args: argparse.Namespace) -> int:
    from parity_models.data import load_dataset  # torch-heavy imports only when the demo runs
    from parity_models.demo import ensure_demo_models

    print(f"[1/4] models: training or reusing a {args.dataset} MLP and its k={args.k} {args.code} parity model")
    base, parity = await asyncio.to_thread(ensure_demo_models, args.cache_dir, args.dataset, args.k, args.code,
                                           time_budget=args.time_budget, data_dir=args.data_dir, progress=True)
    data = load_dataset(args.dataset, args.data_dir)
    n = min(args.queries, len(data.test_x)) // args.k * args.k
    x, y = data.test_x[:n].numpy(), data.test_y[:n].numpy()
    print(f"[2/4] cluster: {args.k} data workers + 1 parity worker (real processes) and the HTTP frontend")
    cluster = LocalCluster(cluster_specs(args.k, 1, "coded", str(base), str(parity)))
    await cluster.start()
    runner = None
    try:
        # a long health interval keeps the stalled worker in rotation, as a straggler that still
        # passes health checks would be; with the default (1 s) it would be routed around instead
        cfg = FrontendConfig(data=cluster.addresses("data"), parity=cluster.addresses("parity"), k=args.k,
                             code=args.code, port=free_port(), deadline_ms=5000, health_interval_s=60.0,
                             decode_policy=args.decode_policy, decode_grace_ms=args.decode_grace_ms)
        runner = web.AppRunner(create_app(cfg), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, cfg.host, cfg.port).start()
        url = f"http://{cfg.host}:{cfg.port}"
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, url)
            print(f"[3/4] serving {n} test images, {args.k} per request, {args.concurrency} concurrent clients")
            print(f"      decode policy {cfg.decode_policy}: "
                  + {"adaptive": "a decode waits until the missing output is overdue for its worker",
                     "eager": "decode as soon as the parity output is in (ParM)",
                     "grace": f"a decode waits {cfg.decode_grace_ms:g} ms for the real output"}[cfg.decode_policy])
            healthy = await _phase("healthy", session, url, x, args.k, args.concurrency)
            await _set_fault(cluster.addresses("data")[0], "stall")
            stalled = await _phase("worker 0 stalled", session, url, x, args.k, args.concurrency)
            await _set_fault(cluster.addresses("data")[0], "none")
        print("[4/4] results")
        _report([healthy, stalled], y)
    finally:
        if runner is not None:
            await runner.cleanup()
        await cluster.stop()
    return 0


async def _wait_ready(session: aiohttp.ClientSession, url: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        async with session.get(f"{url}/ready") as r:
            if r.status == 200:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError("the frontend did not become ready")


async def _set_fault(address: tuple[str, int], spec: str) -> None:
    client = WorkerClient(*address, role="control")
    client.start()
    try:
        await client.wait_connected(5.0)
        await client.set_fault(spec)
    finally:
        await client.close()


async def _phase(name: str, session: aiohttp.ClientSession, url: str, x: np.ndarray, k: int,
                 concurrency: int) -> Phase:
    n = len(x)
    outputs = np.zeros((n, 10), np.float32)
    degraded = np.zeros(n, bool)
    latencies: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal errors
        async with sem:
            t0 = time.perf_counter()
            async with session.post(f"{url}/predict", json={"inputs": x[i:i + k].tolist()}) as r:
                body = await r.json()
            latencies.append((time.perf_counter() - t0) * 1000)
            if r.status != 200:
                errors += 1
                return
            outputs[i:i + k] = body["outputs"]
            degraded[i:i + k] = body["degraded"]

    await asyncio.gather(*(one(i) for i in range(0, n, k)))
    return Phase(name, outputs, degraded, np.array(latencies), errors)


def _report(phases: list[Phase], y: np.ndarray) -> None:
    healthy = phases[0]
    base_pred = healthy.outputs.argmax(1)
    print(f"{'phase':<18} {'answers':>7} {'errors':>6} {'degraded':>8} {'acc all':>8} {'acc degraded':>12} "
          f"{'base acc, same imgs':>19} {'p50 ms':>7} {'p99 ms':>7}")
    for ph in phases:
        pred = ph.outputs.argmax(1)
        d = ph.degraded
        acc_deg = f"{100 * (pred[d] == y[d]).mean():.2f}%" if d.any() else "-"
        base_same = f"{100 * (base_pred[d] == y[d]).mean():.2f}%" if d.any() else "-"
        print(f"{ph.name:<18} {len(y):>7} {ph.errors:>6} {int(d.sum()):>8} {100 * (pred == y).mean():>7.2f}% "
              f"{acc_deg:>12} {base_same:>19} {np.percentile(ph.latencies_ms, 50):>7.1f} "
              f"{np.percentile(ph.latencies_ms, 99):>7.1f}")
    print("acc degraded: top-1 accuracy of answers decoded from the parity model (flagged degraded); "
          "base acc: the base model's own answers for those same images (healthy phase).")
