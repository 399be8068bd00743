"""``python -m rayserve.bench``: ``parm bench`` on Ray Serve. The same flags, query set, open-loop
loadgen process, fault plan and report as harness.bench, against each mode deployed as a Ray
Serve application on a local two-node Ray cluster (or ``--address`` of a running one).

Modes: coded (pinned replicas), equal (the extra replicas behind Ray Serve's own router), hedged
(pinned), none. The plan reaches the replicas through the fault board (rayserve.faults): plan
worker i is data replica rank i, then the mode's extra replicas (parity, or more base replicas);
a plan's crash kills that rank's replica actor, and Ray Serve replaces it.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve

from harness import report
from harness.bench import BenchConfig, describe, hedge_delay, prepare_queries, start_loadgen
from harness.plan import Event, expand
from harness.tails import exposed_fraction, faulted_intervals
from parm.bench_command import add_bench_arguments, build_config, render
from rayserve.app import build
from rayserve.faults import board
from rayserve.procs import cpu_seconds, serve_pids
from rayserve.settings import DATA, PARITY
from workers.cluster import free_port

RAY_MODES = ("coded", "equal", "hedged", "none")


def settings(cfg: BenchConfig, mode: str, hedge_ms: float | None) -> dict[str, Any]:
    frontend: dict[str, Any] = {"deadline_ms": cfg.deadline_ms, "group_timeout_ms": cfg.group_timeout_ms,
                                "max_pending": cfg.max_pending}
    if hedge_ms is not None:
        frontend["hedge_delay_ms"] = hedge_ms
    s: dict[str, Any] = {"model": cfg.model, "mode": mode, "k": cfg.k, "code": cfg.code, "app_name": mode,
                         "data_replicas": cfg.n_data, "parity_replicas": cfg.n_extra if mode != "none" else 0,
                         "max_batch": cfg.max_batch, "service_time": cfg.service_time, "fault_injection": True,
                         "replica_cpus": 0.25, "frontend": frontend,
                         "routing": "ray" if mode in ("equal", "none") else "pinned"}
    if mode == "coded":
        s["parity_model"] = cfg.parity_spec
    return s


def target(mode: str, n_data: int, worker: int) -> tuple[str, int]:
    """Plan worker -> (deployment, rank) on the board."""
    if mode == "coded" and worker >= n_data:
        return PARITY, worker - n_data
    return DATA, worker


async def replay(mode: str, cfg: BenchConfig, events: list[Event], start_epoch: float) -> dict[str, int]:
    """Each event at its time through the board: spec changes, and kills of the rank's replica.
    A plan's restart is Ray Serve's to do: it replaces a killed replica at once, so restarts are
    counted, not replayed (``restarts_by_ray``)."""
    handle = board(mode)
    done = {"applied": 0, "skipped": 0, "killed": 0, "kill_missed": 0, "restarts_by_ray": 0}
    workers = cfg.n_data + (cfg.n_extra if mode != "none" else 0)
    for ev in events:
        await asyncio.sleep(max(0.0, start_epoch + ev.t_s - time.time()))
        if ev.worker >= workers:
            done["skipped"] += 1
        elif ev.action == "spec":
            await handle.set.remote(*target(mode, cfg.n_data, ev.worker), ev.spec)
            done["applied"] += 1
        elif ev.action == "kill":
            killed = await handle.kill.remote(*target(mode, cfg.n_data, ev.worker))
            done["killed" if killed else "kill_missed"] += 1
        else:
            done["restarts_by_ray"] += 1
    return done


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


async def wait_ready(url: str, mode: str, cfg: BenchConfig, timeout_s: float = 180.0) -> None:
    data = 1 if mode in ("equal", "none") else cfg.n_data + (cfg.n_extra if mode == "hedged" else 0)
    parity = cfg.n_extra if mode == "coded" else 0
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError, ValueError):
            r = await asyncio.to_thread(get_json, f"{url}/ready")
            if r.get("healthy_data_workers") == data and r.get("healthy_parity_workers") == parity:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{mode}: not ready after {timeout_s:g} s")


async def run_mode(cfg: BenchConfig, mode: str, rate: float, base_url: str, queries: Path, tmp: Path,
                   hedge_ms: float | None) -> tuple[dict[str, Any], np.ndarray]:
    url = f"{base_url}/{mode}"
    await board(mode).clear.remote()
    serve.run(build(settings(cfg, mode, hedge_ms)), name=mode, route_prefix=f"/{mode}", blocking=False)
    try:
        await wait_ready(url, mode, cfg)
        out = tmp / f"records-{mode}-{rate:g}.npz"
        loadgen = await start_loadgen(cfg, rate, url, queries, out)
        start_epoch = time.time() + 0.3
        assert loadgen.stdin is not None
        loadgen.stdin.write(f"{start_epoch!r}\n".encode())
        await loadgen.stdin.drain()
        events = expand(cfg.plan, cfg.n_data + cfg.n_extra, cfg.duration_s)
        replaying = asyncio.create_task(replay(mode, cfg, events, start_epoch))
        pids = serve_pids(mode)
        cpu0 = cpu_seconds(pids)
        await loadgen.wait()
        cpu = {k: round(v - cpu0.get(k, 0.0), 3) for k, v in cpu_seconds(pids).items()}
        replayed = await replaying
        if loadgen.returncode != 0:
            raise RuntimeError(f"loadgen exited with status {loadgen.returncode}")
        data = np.load(out)
        records = {k: data[k] for k in report.RECORD_FIELDS if k in data}
        summary = report.summarize(records, await asyncio.to_thread(get_json, f"{url}/stats"))
        summary["cpu_s"] = cpu  # per Serve process kind over the run (the proxy serves every app)
        summary["cpu_ms_per_answer"] = {k: round(1000 * v / max(1, summary["answered"]), 3) for k, v in cpu.items()}
        summary["faults_replayed"] = replayed
        summary["exposed_frac"] = exposed_fraction(records["sched_s"],
                                                   faulted_intervals(events, range(cfg.n_data), cfg.duration_s))
        summary["hedge_delay_ms"] = hedge_ms
        return summary, records["latency_ms"][records["status"] == 200]
    finally:
        serve.delete(mode)


async def run_bench(cfg: BenchConfig, base_url: str) -> dict[str, Any]:
    rep = describe(cfg) | {"engine": f"ray {ray.__version__}", "runs": []}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="parm-ray-bench-") as tmp:
        queries = Path(tmp) / "queries.npz"
        prepare_queries(cfg, queries)
        rep["startup_s"] = round(time.monotonic() - t0, 1)
        for rate in cfg.rates:
            modes: dict[str, dict[str, Any]] = {}
            for mode in cfg.modes:
                fake_runs = {m: _Done(s) for m, s in modes.items()}  # hedge_delay reads equal's p95
                hedge_ms = hedge_delay(cfg, fake_runs) if mode == "hedged" else None  # type: ignore[arg-type]
                modes[mode], _ = await run_mode(cfg, mode, rate, base_url, queries, Path(tmp), hedge_ms)
            rep["runs"].append({"rate_qps": rate, "modes": modes, "comparison": report.compare(modes)})
    rep["wall_s"] = round(time.monotonic() - t0, 1)
    return rep


class _Done:
    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary


def start_cluster(address: str | None, cpus: int) -> Any:
    """A local two-node cluster (head + one worker node) unless ``address`` names a running one."""
    if address:
        ray.init(address=address)
        return None
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False})
    cluster.add_node(num_cpus=cpus)
    ray.init(address=cluster.address)
    return cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rayserve.bench", description=__doc__.split("\n\n")[0])
    add_bench_arguments(parser)
    parser.add_argument("--address", default=None, help="a running Ray cluster (default: start a local 2-node one)")
    parser.add_argument("--node-cpus", type=int, default=8, help="logical CPUs of each local node")
    args = parser.parse_args(argv)
    bad = set(args.modes) - set(RAY_MODES)
    if bad:
        parser.error(f"modes {sorted(bad)} do not run on Ray; use {', '.join(RAY_MODES)}")
    cfg = build_config(args)
    cluster = start_cluster(args.address, args.node_cpus)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        rep = asyncio.run(run_bench(cfg, f"http://127.0.0.1:{port}"))
    finally:
        serve.shutdown()
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    print(render(rep))
    for run_ in rep["runs"]:
        for mode, s in run_["modes"].items():
            print(f"{mode}: Serve CPU ms per answer {s['cpu_ms_per_answer']}")
    if args.json:
        report.write_json(rep, args.json)
    lost = sum(m["lost"] for run_ in rep["runs"] for m in run_["modes"].values())
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
