"""``parm bench``: for each load level and serving mode, a real local deployment (worker processes
+ the frontend process), an open-loop Poisson load from a separate loadgen process, and one fault
plan replayed identically; then per-mode latency / accuracy summaries (harness/report.py).

Worker processes are started once and shared by every mode and rate (starting 24 torch processes
on 2 cores takes over a minute): before each run every worker is healed (spec "none", restarted if
a crash left it dead); each run gets a fresh frontend process and a fresh loadgen process.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import report, trace_tail
from harness.bench_faults import FaultReplayer
from harness.bench_modes import (ALL_MODES, LEARNED_MODES, PARITY_MODES, check, frontend_args, healthy_needed, plan_targets,
                                 worker_specs)
from harness.bench_proc import RssSampler, cpu_model, cpu_snapshot, cpu_usage
from harness.deploy import BenchCluster, FrontendProcess
from harness.plan import Event, FaultPlan, expand
from harness.tails import exposed_fraction, faulted_intervals
from workers.cluster import die_with_parent, free_port


@dataclass
class BenchConfig:
    modes: tuple[str, ...] = ALL_MODES
    n_data: int = 4
    k: int = 2
    model: str = "builtin:linear"
    parity_model: str | None = None      # None: builtin:linear's exact sum-code parity model
    code: str = "sum"
    service_time: str = "fixed:ms=10"
    parity_cost: float = 1.0             # a parity query costs this many base queries (service time x this)
    rates: tuple[float, ...] = (100.0,)  # each rate runs every mode on the same worker pool
    duration_s: float = 10.0
    plan: FaultPlan = field(default_factory=FaultPlan)
    seed: int = 0
    dataset: str = "fashion-mnist"
    data_dir: str | None = None          # folder holding <dataset>/ (else the usual lookup: parity_models.data)
    max_batch: int = 1                   # ParM's setting: one query per inference
    deadline_ms: float = 5000.0
    group_timeout_ms: float = 20.0
    decode_grace_ms: float = 0.0         # 0: decode as soon as possible (ParM)
    hedge_delay_ms: float | None = None  # None: the frontend's adaptive p95
    progress: bool = True
    max_pending: int = 100000            # the frontend's admission limit (--max-pending)
    bad_frac: float = 0.0                # loadgen: malformed requests sent alongside, per query
    rss_interval_s: float = 10.0         # RSS sampling period of the frontend and the workers
    berrut_r: int = 1                    # berrut mode: parity queries per group, each on its own replica
    trace_dir: str | None = None         # coded modes: frontend traces written here, their tail causes summarised

    def __post_init__(self) -> None:
        check(self)

    @property
    def n_extra(self) -> int:
        return max(1, self.n_data // self.k)

    @property
    def parity_spec(self) -> str | None:
        """The parity workers' model; None when coded mode does not run (no parity workers)."""
        if not any(m in LEARNED_MODES for m in self.modes):
            return None
        return self.parity_model or f"{self.model}:parity_k={self.k}"


@dataclass
class ModeRun:
    records: dict[str, np.ndarray]
    summary: dict[str, Any]


def prepare_queries(cfg: BenchConfig, path: Path) -> None:
    """The test images the loadgen draws from, shuffled by the seed (same order for every mode)."""
    from parity_models.data import load_dataset
    data = load_dataset(cfg.dataset, cfg.data_dir, download=False)
    n = min(len(data.test_x), max(1, int(max(cfg.rates) * cfg.duration_s * 1.5) + 100))
    order = np.random.default_rng(cfg.seed).permutation(len(data.test_x))[:n]
    np.savez(path, x=data.test_x.numpy()[order].astype(np.float32), y=data.test_y.numpy()[order])


def hedge_delay(cfg: BenchConfig, done: dict[str, ModeRun]) -> float | None:
    """--hedge-delay-ms if given; else the p95 latency that equal (or none) mode just measured at
    this rate under the same plan (The Tail at Scale: defer hedges to the p95). The frontend's own
    adaptive p95 is not used: GroupRun builds a fresh, empty tracker per group (``latency or
    LatencyTracker()`` is False for an empty tracker), so it always falls back to 10 ms."""
    if cfg.hedge_delay_ms is not None:
        return cfg.hedge_delay_ms
    ref = done.get("equal") or done.get("none")
    return ref.summary["p95"] if ref else None


async def _wait_all_healthy(fe: FrontendProcess, n_data: int, n_parity: int, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        state = await fe.get_json("/ready")
        if state.get("healthy_data_workers", 0) >= n_data and state.get("healthy_parity_workers", 0) >= n_parity:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"workers not all healthy within {timeout_s:g} s: {state}")


async def start_loadgen(cfg: BenchConfig, rate: float, url: str, queries: Path, out: Path) -> asyncio.subprocess.Process:
    cmd = [sys.executable, "-m", "harness.loadgen", "--url", url + "/predict", "--queries", str(queries),
           "--rate", f"{rate:g}", "--duration", f"{cfg.duration_s:g}", "--seed", str(cfg.seed),
           "--timeout", f"{cfg.deadline_ms / 1000 + 10:g}", "--out", str(out), "--bad-frac", f"{cfg.bad_frac:g}"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                preexec_fn=die_with_parent)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"loadgen failed to start (said {line!r})")
    except BaseException:  # also cancellation (the frontend failed to start): leave no process behind
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc


async def _progress(cfg: BenchConfig, label: str, start_epoch: float) -> None:
    from tqdm import tqdm
    with tqdm(total=round(cfg.duration_s), desc=f"bench {label:>12}", unit="s", disable=not cfg.progress,
              leave=False, file=sys.stderr) as bar:
        while bar.n < bar.total:
            await asyncio.sleep(0.5)
            bar.update(max(0, min(bar.total, round(time.time() - start_epoch)) - bar.n))


async def run_mode(cfg: BenchConfig, mode: str, rate: float, pool: Pool, queries: Path, workdir: Path,
                   hedge_ms: float | None = None) -> ModeRun:
    """One mode at one rate on the shared worker pool: a fresh frontend process and loadgen
    process, the plan replayed; everything started here is stopped here, whatever happens."""
    cluster = pool.cluster
    await pool.replayer.reset()
    trace_file = _trace_file(cfg, mode, rate)
    fe = FrontendProcess(frontend_args(cfg, mode, cluster, hedge_ms)
                         + (["--trace-file", str(trace_file)] if trace_file else []), free_port())
    loadgen: asyncio.subprocess.Process | None = None
    tasks: list[asyncio.Task[Any]] = []
    out = workdir / f"records-{mode}-{rate:g}.npz"
    starting = asyncio.create_task(start_loadgen(cfg, rate, fe.url, queries, out))  # overlaps the frontend's start
    try:
        await fe.start()
        await _wait_all_healthy(fe, *healthy_needed(cfg, mode))
        loadgen = await starting
        start_epoch = time.time() + 0.3
        assert loadgen.stdin is not None and fe.proc is not None
        loadgen.stdin.write(f"{start_epoch!r}\n".encode())
        await loadgen.stdin.drain()
        events = expand(cfg.plan, cfg.n_data + cfg.n_extra, cfg.duration_s)
        tasks = [asyncio.create_task(pool.replayer.run(events, start_epoch, plan_targets(cfg, mode))),
                 asyncio.create_task(_progress(cfg, f"{mode} {rate:g}/s", start_epoch))]
        await asyncio.sleep(max(0.0, start_epoch - time.time()))
        cpu0 = cpu_snapshot(fe.proc.pid, cluster.pids())
        rss = RssSampler(fe.proc.pid, cluster.pids, cfg.rss_interval_s, loadgen.pid)
        rss.sample()
        tasks.append(asyncio.create_task(rss.run()))
        await loadgen.wait()
        cpu = cpu_usage(cpu0, cpu_snapshot(fe.proc.pid, cluster.pids()))
        rss.sample()
        replay = await tasks[0]
        if loadgen.returncode != 0:
            raise RuntimeError(f"loadgen exited with status {loadgen.returncode}")
        data = np.load(out)
        records = {k: data[k] for k in report.RECORD_FIELDS if k in data}
        meta = json.loads(str(data["meta"]))
        cpu["loadgen_cpu_s"] = round(meta["cpu_s"], 3)
        summary = report.summarize(records, await fe.get_json("/stats"), cpu)
        summary["rss"] = rss.summary()
        summary["malformed"] = meta.get("malformed", {})
        summary["error_codes"] = meta.get("error_codes", {})
        summary["faults_replayed"] = vars(replay)
        # the share of queries whose data worker the plan had slowed or down (precision of degraded answers)
        summary["exposed_frac"] = exposed_fraction(records["sched_s"],
                                                   faulted_intervals(events, range(cfg.n_data), cfg.duration_s))
        if trace_file is not None:
            await fe.stop()  # the frontend writes its trace as it shuts down
            summary["tail_causes"] = _tail_causes(cfg, mode, cluster, trace_file, start_epoch, events)
        return ModeRun(records, summary)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if loadgen is None and not starting.cancel():
            loadgen = starting.result() if starting.exception() is None else None
        await asyncio.gather(starting, return_exceptions=True)
        if loadgen is not None and loadgen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                loadgen.kill()
            await loadgen.wait()
        await fe.stop()


def _trace_file(cfg: BenchConfig, mode: str, rate: float) -> Path | None:
    if cfg.trace_dir is None or mode not in PARITY_MODES:
        return None
    folder = Path(cfg.trace_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"trace-{mode}-{rate:g}.jsonl"


def _tail_causes(cfg: BenchConfig, mode: str, cluster: BenchCluster, trace_file: Path, start_epoch: float,
                 events: list[Event]) -> dict[str, Any]:
    """The tail's causes from the frontend's trace, the plan's faulted intervals matched by worker address."""
    if not trace_file.exists():
        return {"error": f"the frontend wrote no trace to {trace_file}"}
    header, groups = trace_tail.load(trace_file)
    plan_worker = {f"{h}:{p}": i for i, (h, p) in enumerate(cluster.workers[j].address for j in plan_targets(cfg, mode))}
    intervals = faulted_intervals(events, range(len(plan_worker)), cfg.duration_s)
    return trace_tail.tail_causes(groups, trace_tail.plan_faulted(header, start_epoch, plan_worker, intervals))


@dataclass
class Pool:
    """The worker processes shared by every mode and rate of one bench run."""

    cluster: BenchCluster
    replayer: FaultReplayer


@contextlib.asynccontextmanager
async def worker_pool(cfg: BenchConfig) -> AsyncIterator[Pool]:
    cluster = BenchCluster(worker_specs(cfg))
    replayer = FaultReplayer(cluster)
    try:
        await cluster.start(timeout_s=300)
        await replayer.connect()
        yield Pool(cluster, replayer)
    finally:
        await replayer.close()
        await cluster.stop()


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu_model": cpu_model(), "loadavg_at_start": list(os.getloadavg())}


def describe(cfg: BenchConfig) -> dict[str, Any]:
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
            "plan": cfg.plan.describe(), "service_time": cfg.service_time, "parity_cost": cfg.parity_cost, "rates_qps": list(cfg.rates),
            "duration_s": cfg.duration_s, "n_data": cfg.n_data, "n_extra": cfg.n_extra, "k": cfg.k,
            "model": cfg.model, "parity_model": cfg.parity_spec, "code": cfg.code, "modes": list(cfg.modes),
            "berrut_r": cfg.berrut_r, "dataset": cfg.dataset, "max_batch": cfg.max_batch, "seed": cfg.seed,
            "deadline_ms": cfg.deadline_ms, "hedge_delay_ms": cfg.hedge_delay_ms,
            "decode_grace_ms": cfg.decode_grace_ms, "group_timeout_ms": cfg.group_timeout_ms,
            "max_pending": cfg.max_pending, "bad_frac": cfg.bad_frac, "rss_interval_s": cfg.rss_interval_s}


async def run_bench(cfg: BenchConfig, pool: Pool | None = None,
                    queries: Path | None = None) -> tuple[dict[str, Any], list[dict[str, ModeRun]]]:
    """Every rate, every mode on one worker pool -> (report, per rate {mode: its run and records}).
    ``pool`` and ``queries`` may be given (tests share them); else they are made here."""
    rep = describe(cfg)
    rep["runs"], all_runs = [], []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="parm-bench-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            if queries is None:
                queries = Path(tmp) / "queries.npz"
                prepare_queries(cfg, queries)
            if pool is None:
                pool = await stack.enter_async_context(worker_pool(cfg))
            rep["startup_s"] = round(time.monotonic() - t0, 1)
            for rate in cfg.rates:
                runs: dict[str, ModeRun] = {}
                for mode in cfg.modes:
                    hedge_ms = hedge_delay(cfg, runs) if mode == "hedged" else None
                    runs[mode] = await run_mode(cfg, mode, rate, pool, queries, Path(tmp), hedge_ms)
                    runs[mode].summary["hedge_delay_ms"] = hedge_ms
                modes = {m: r.summary for m, r in runs.items()}
                rep["runs"].append({"rate_qps": rate, "modes": modes, "comparison": report.compare(modes)})
                all_runs.append(runs)
    rep["wall_s"] = round(time.monotonic() - t0, 1)
    return rep, all_runs


def answered_latencies(runs: dict[str, ModeRun]) -> dict[str, np.ndarray]:
    return {m: r.records["latency_ms"][r.records["status"] == 200] for m, r in runs.items()}
