"""Resource accounting of a ``parm bench`` run's processes, read from /proc: CPU seconds used in
the load window, and resident memory (VmRSS) of the frontend and the workers sampled at the start,
every ``interval_s`` during the run, and at the end (a leak shows as a rising frontend line).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0.0 once it is gone), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of stat)


def rss_kb(pid: int) -> int:
    """Resident set size (VmRSS) of a live process in KiB, from /proc/PID/status; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0  # a zombie has no VmRSS line


def cpu_snapshot(fe_pid: int, worker_pids: list[int]) -> dict[str, Any]:
    usage = os.times()
    return {"frontend": cpu_seconds(fe_pid), "workers": {p: cpu_seconds(p) for p in worker_pids},
            "bench": usage.user + usage.system, "wall": time.monotonic()}


def cpu_usage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """CPU seconds used in the load window; frontend_util = frontend CPU s per wall s (1.0 = a core).
    Workers count only processes alive at both ends (a restarted worker's new pid is left out)."""
    wall = b["wall"] - a["wall"]
    out = {f"{k}_cpu_s": round(b[k] - a[k], 3) for k in ("frontend", "bench")}
    out["workers_cpu_s"] = round(sum(b["workers"][p] - a["workers"][p] for p in a["workers"] if p in b["workers"]), 3)
    out["window_s"] = round(wall, 3)
    out["frontend_util"] = round((b["frontend"] - a["frontend"]) / wall, 3) if wall > 0 else 0.0
    return out


class RssSampler:
    """Samples VmRSS (KiB) of the frontend, of the sum over live workers and of the loadgen.

    ``sample()`` takes one sample now; ``run()`` samples every ``interval_s`` until cancelled.
    Worker pids are re-read at every sample (``worker_pids`` is a callable) so a restarted
    worker's new process is counted; t_s is seconds since the sampler was made."""

    def __init__(self, frontend_pid: int, worker_pids: Callable[[], list[int]], interval_s: float = 10.0,
                 loadgen_pid: int | None = None) -> None:
        self.frontend_pid, self.worker_pids, self.interval_s = frontend_pid, worker_pids, interval_s
        self.loadgen_pid = loadgen_pid
        self.samples: list[dict[str, float]] = []
        self._t0 = time.monotonic()

    def sample(self) -> dict[str, float]:
        pids = self.worker_pids()
        s = {"t_s": round(time.monotonic() - self._t0, 2), "frontend_kb": rss_kb(self.frontend_pid),
             "workers_kb": sum(rss_kb(p) for p in pids), "workers": len(pids)}
        if self.loadgen_pid is not None and rss_kb(self.loadgen_pid):  # not once it has exited
            s["loadgen_kb"] = rss_kb(self.loadgen_pid)
        self.samples.append(s)
        return s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.sample()

    def summary(self) -> dict[str, Any]:
        """first / max / last per series (KiB), growth of the frontend last - first, every sample."""
        out: dict[str, Any] = {"interval_s": self.interval_s, "n_samples": len(self.samples), "samples": self.samples}
        for key in ("frontend_kb", "workers_kb", "loadgen_kb"):
            values = [s[key] for s in self.samples if key in s]
            if values:
                out[key.removesuffix("_kb")] = {"first_kb": values[0], "max_kb": max(values), "last_kb": values[-1]}
        fe = out.get("frontend")
        out["frontend_growth_kb"] = fe["last_kb"] - fe["first_kb"] if fe else 0
        return out


def rss_line(rss: dict[str, Any]) -> str:
    """One line of text: frontend and worker RSS first / max / last, in MiB."""
    def mib(series: dict[str, Any]) -> str:
        return "/".join(f"{series[k] / 1024:.1f}" for k in ("first_kb", "max_kb", "last_kb"))
    parts = [f"{name} {mib(rss[name])}" for name in ("frontend", "workers", "loadgen") if name in rss]
    return (f"RSS MiB first/max/last ({rss['n_samples']} samples every {rss['interval_s']:g} s): "
            + ", ".join(parts) + f"; frontend growth {rss['frontend_growth_kb'] / 1024:+.1f} MiB")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
