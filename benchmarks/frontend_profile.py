"""Where the frontend's CPU goes: the runner that puts ``parm serve`` under cProfile (CPU time) and
the summary by area and function. Used by benchmarks/frontend_bench.py."""
from __future__ import annotations

import pstats
from pathlib import Path
from typing import Any

# Where profiled time goes, by the file a function lives in (first match wins).
PROFILE_BUCKETS = (("aiohttp", "aiohttp"), ("torch", "torch"), ("numpy", "numpy"), ("msgpack", "msgpack"),
                   ("json", "json"), ("logging", "logging"), ("asyncio", "asyncio"), ("selectors", "asyncio"),
                   ("frontend/", "frontend"), ("workers/", "workers.protocol"), ("coders/", "coders"))

# Runs `parm serve` under cProfile counting CPU time (not wall time: epoll waits would dominate), with
# the heavy imports done before profiling starts, so the profile shows the serving path only.
PROFILE_RUNNER = """
import cProfile, sys, time
import torch, aiohttp.web, parm.commands, parm.demo, workers.cli, parity_models.cli, frontend.app
from parm.cli import main
out, argv = sys.argv[1], sys.argv[2:]
prof = cProfile.Profile(time.process_time)
prof.enable()
try:
    main(argv)
finally:
    prof.disable()
    prof.dump_stats(out)
"""


def summarize_profile(path: Path, answers: int) -> dict[str, Any]:
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1e-9
    buckets: dict[str, float] = {}
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, _cum, _callers) in entries.items():
        bucket = next((b for key, b in PROFILE_BUCKETS if key in file), "other" if file != "~" else builtin_bucket(func))
        buckets[bucket] = buckets.get(bucket, 0.0) + tottime
        rows.append((tottime, ncalls, f"{Path(file).name}:{line}({func})" if file != "~" else func))
    rows.sort(reverse=True)
    per = max(answers, 1)
    return {"answers": answers, "profiled_s": total,
            "us_per_answer_by_area": {b: t / per * 1e6 for b, t in sorted(buckets.items(), key=lambda kv: -kv[1])},
            "top_functions": [{"function": name, "calls": n, "tottime_s": t, "share": t / total,
                               "us_per_answer": t / per * 1e6} for t, n, name in rows[:15]]}


def builtin_bucket(func: str) -> str:
    if "socket" in func or "epoll" in func or "select" in func:
        return "socket/epoll syscalls"
    return "builtins"


def format_profile(mode: str, prof: dict[str, Any]) -> str:
    areas = ", ".join(f"{k} {v:.0f}" for k, v in list(prof["us_per_answer_by_area"].items())[:8])
    top = "\n".join(f"    {f['us_per_answer']:7.1f} us/ans {100 * f['share']:5.1f}%  {f['function']}"
                    for f in prof["top_functions"][:10])
    return f"\nProfile, frontend {mode} (cProfile tottime, us per answer): {areas}\n{top}"
