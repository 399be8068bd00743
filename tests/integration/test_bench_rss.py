"""The bench harness's memory and accounting additions, fast: VmRSS sampling of live and dead
processes, its summary and text line, and the summary's duplicate / overload counts."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np

from harness import report
from harness.bench_proc import RssSampler, rss_kb, rss_line
from harness.loadgen import Records, malformed_summary
from parm import bench_command


def test_rss_of_a_live_process_is_positive_and_of_a_dead_one_zero() -> None:
    assert rss_kb(os.getpid()) > 1000  # a Python interpreter with numpy: well over 1 MiB
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert rss_kb(child.pid) == 0


async def test_sampler_samples_periodically_and_summarises() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # noqa: ASYNC220
    try:
        sampler = RssSampler(os.getpid(), lambda: [child.pid], interval_s=0.05, loadgen_pid=child.pid)
        sampler.sample()
        task = asyncio.create_task(sampler.run())
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        child.kill()
        child.wait()
        sampler.sample()  # the child is gone: no loadgen series in this last sample
    finally:
        if child.poll() is None:
            child.kill()
    rss = sampler.summary()
    assert rss["n_samples"] >= 4 and rss["interval_s"] == 0.05
    assert rss["frontend"]["first_kb"] > 1000 and rss["frontend"]["max_kb"] >= rss["frontend"]["last_kb"]
    assert rss["workers"]["first_kb"] > 0 and rss["samples"][-1]["workers_kb"] == 0
    assert "loadgen_kb" not in rss["samples"][-1] and rss["loadgen"]["first_kb"] > 0
    assert rss["frontend_growth_kb"] == rss["frontend"]["last_kb"] - rss["frontend"]["first_kb"]
    times = [s["t_s"] for s in rss["samples"]]
    assert times == sorted(times)
    line = rss_line(rss)
    assert line.startswith("RSS MiB first/max/last") and "frontend" in line and "workers" in line


def test_summary_counts_duplicates_and_overload_rejections() -> None:
    rec = Records(np.arange(4) / 10.0, np.zeros(4, np.int64))
    rec.status[:] = [200, 503, 503, 0]
    rec.latency_ms[:3] = 5.0
    rec.lag_ms[:] = 1.0
    rec.responses[:] = [1, 1, 2, 0]
    rec.retry_after[:] = [False, True, False, False]
    s = report.summarize({k: getattr(rec, k) for k in report.RECORD_FIELDS})
    assert (s["lost"], s["duplicated"], s["overload_503"], s["overload_503_with_retry_after"]) == (1, 1, 2, 1)
    s["rss"] = {"n_samples": 1, "interval_s": 10, "frontend_growth_kb": 0,
                "frontend": {"first_kb": 1024, "max_kb": 1024, "last_kb": 1024}}
    s["malformed"] = malformed_summary(rec.bad | {"nan:400": 3, "bad_json:503": 1})
    lines = bench_command.resource_lines({"coded": s})
    assert any("RSS" in x for x in lines) and any("2 x 503, 1 with Retry-After" in x for x in lines)
    assert any("malformed requests 4, 4xx 3, other 1" in x for x in lines)

