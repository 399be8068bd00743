"""The processes of benchmarks/frontend_bench.py: frontends (`parm serve`, optionally under cProfile or
with a trace), the bare-aiohttp floor, and one load-generator run with the CPU each process spent.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from frontend_profile import PROFILE_RUNNER

from harness.bench_proc import cpu_seconds
from workers.cluster import LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
LOADGEN = str(ROOT / "benchmarks" / "loadgen.py")


@dataclass
class Frontend:
    mode: str
    port: int
    proc: asyncio.subprocess.Process
    command: list[str]
    lean_port: int | None = None  # parm serve --predict-port: the lean listener's

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predict"

    @property
    def lean_url(self) -> str:
        return f"http://127.0.0.1:{self.lean_port}/predict"


# -- processes ----------------------------------------------------------------------------------


def addrs(cluster: LocalCluster, role: str) -> str:
    return ",".join(f"{h}:{p}" for h, p in cluster.addresses(role))


def serve_command(cluster: LocalCluster, mode: str, port: int, log_level: str, processes: int = 1,
                  event_loop: str = "auto", trace_to: Path | None = None) -> list[str]:
    cmd = [PY, "-m", "parm.cli", "--log-level", log_level, "serve", "--port", str(port),
           "--data", addrs(cluster, "data"), "--mode", mode, "--k", "2", "--code", "sum", "--processes", str(processes),
           "--event-loop", event_loop]
    cmd += ["--trace-file", str(trace_to)] if trace_to is not None else []
    return cmd + (["--parity", addrs(cluster, "parity")] if mode == "coded" else [])


async def start_frontend(cluster: LocalCluster, mode: str, args: argparse.Namespace, log_dir: Path,
                         profile_to: Path | None = None, processes: int = 1, trace_to: Path | None = None) -> Frontend:
    port = free_port()
    cmd = serve_command(cluster, mode, port, args.frontend_log_level, processes, args.event_loop, trace_to)
    lean_port = free_port() if getattr(args, "lean", False) else None
    cmd += ["--predict-port", str(lean_port)] if lean_port is not None else []
    if profile_to is not None:
        cmd = [PY, "-c", PROFILE_RUNNER, str(profile_to), *cmd[3:]]
    log = open(log_dir / f"frontend-{mode}-{port}.log", "wb")  # noqa: SIM115 (lives as long as the process)
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdout=log, stderr=log,
                                                preexec_fn=_pinned_to(getattr(args, "frontend_cpus", None)))
    fe = Frontend(mode, port, proc, cmd, lean_port)
    await wait_ready(fe)
    return fe


async def start_floor(log_dir: Path, cpus: set[int] | None = None, script: str = "aiohttp_floor.py",
                      mode: str = "floor") -> Frontend:
    """benchmarks/aiohttp_floor.py: the HTTP stack doing nothing but parse and answer (the floor); or
    benchmarks/protocol_floor.py, the same work without aiohttp's request layer (mode "pfloor")."""
    port = free_port()
    cmd = [PY, str(ROOT / "benchmarks" / script), "--port", str(port)]
    log = open(log_dir / f"{mode}-{port}.log", "wb")  # noqa: SIM115 (lives as long as the process)
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdout=log, stderr=log, preexec_fn=_pinned_to(cpus))
    fe = Frontend(mode, port, proc, cmd)
    await wait_ready(fe)
    return fe


def _pinned_to(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn that runs the child (its threads and children too) on ``cpus`` only; None: where it likes."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


async def wait_ready(fe: Frontend, timeout_s: float = 60.0) -> None:
    """Poll /ready until the frontend has healthy workers (it knows the input shape)."""
    end = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < end:
            if fe.proc.returncode is not None:
                raise RuntimeError(f"frontend ({fe.mode}) exited with status {fe.proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"http://127.0.0.1:{fe.port}/ready") as resp:
                    state = await resp.json()
                    if resp.status == 200 and (fe.mode != "coded" or state.get("coded")):
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"frontend ({fe.mode}) not ready after {timeout_s:g} s")


async def stop_process(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM, grace_s: float = 10.0) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(sig)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


# -- one load run -------------------------------------------------------------------------------

async def run_load(target: list[str], load: list[str], duration: float, warmup: float, fmt: str,
                   pids: dict[str, int]) -> dict[str, Any]:
    """Run loadgen in its own process; its JSON summary plus the CPU each watched process spent per answer."""
    cmd = [PY, LOADGEN, *target, *load, "--duration", str(duration), "--warmup", str(warmup), "--format", fmt]
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {err.decode()[-2000:]}")
    summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    answers = max(summary["ok_total"], 1)
    summary["cpu_us_per_answer"] = {name: (cpu_seconds(pid) - before[name]) / answers * 1e6 for name, pid in pids.items()}
    summary["cpu_us_per_answer"]["loadgen"] = summary["loadgen_cpu_s"] / answers * 1e6
    return summary


def brief(name: str, s: dict[str, Any]) -> str:
    cpu = " ".join(f"{k}={v:.0f}" for k, v in s["cpu_us_per_answer"].items())
    bad = {k: v for k, v in s["status"].items() if k != "200"}
    return (f"  {name:<7} {s['load']:<14} achieved {s['achieved_rate']:7.1f}/s  p50 {s['p50_ms']:6.2f} ms  "
            f"p99 {s['p99_ms']:7.2f} ms  errors {bad or 0}  cpu us/answer: {cpu}")
