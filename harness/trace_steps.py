"""Where a query's time inside the frontend goes, from a trace (frontend.trace): from joining its
group to its request going out (dispatch), the worker's round trip, and from its output (or the
group's decode) to its answer. benchmarks/frontend_bench.py --trace reports these for the whole
run and for the queries at or past p99, to tell a slow worker from a busy frontend loop (all
traced queries, the load generator's warm-up included).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.trace_tail import QueryRecord, load

STEPS = ("dispatch", "worker", "finish")


def steps(q: QueryRecord) -> dict[str, float] | None:
    """Seconds per step of an answered query; None without an answer. ``worker`` spans the last
    request's send to its output, NaN unless the answer came from it (decoded, or a copy won);
    ``finish`` then spans from that send to the answer, so it holds the decode policy's wait."""
    if q.answered is None or not q.sends:
        return None
    last_send = q.sends[-1][0]
    own = q.path == "own" and q.own_out is not None and q.own_out >= last_send
    return {"total": q.answered - q.joined, "dispatch": q.sends[0][0] - q.joined,
            "worker": q.own_out - last_send if own else float("nan"),
            "finish": q.answered - (q.own_out if own else last_send)}


def summarize(path: str | Path, tail: float = 99.0) -> dict[str, Any]:
    """p50 and p99 of each step over all answered queries, and each step's median over the queries
    whose total is at or past the ``tail`` percentile (ms)."""
    _header, groups = load(path)
    rows = [s for g in groups for q in g.queries if (s := steps(q)) is not None]
    if not rows:
        return {"queries": 0}
    table = {k: np.array([r[k] for r in rows]) * 1e3 for k in ("total", *STEPS)}
    cut = float(np.percentile(table["total"], tail))
    slow = table["total"] >= cut
    out: dict[str, Any] = {"queries": len(rows), f"p{tail:g}_total_ms": cut, "tail_queries": int(slow.sum()),
                           "decoded_or_copied": int(np.isnan(table["worker"]).sum())}
    for k, v in table.items():
        out[k] = {"p50_ms": _pct(v, 50), "p99_ms": _pct(v, 99), "tail_median_ms": _pct(v[slow], 50)}
    return out


def _pct(v: np.ndarray, q: float) -> float | None:
    v = v[~np.isnan(v)]
    return float(np.percentile(v, q)) if v.size else None


def format_steps(mode: str, s: dict[str, Any]) -> str:
    if not s.get("queries"):
        return f"  {mode}: no traced queries"
    cells = "  ".join(f"{k} {_fmt(s[k]['p50_ms'])}/{_fmt(s[k]['p99_ms'])}/{_fmt(s[k]['tail_median_ms'])}"
                      for k in ("total", *STEPS))
    return f"  {mode:<6} {s['queries']} queries: {cells}  (ms: p50/p99/median of the >= p99 queries)"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
