"""Summaries of a simulated run: latency percentiles, throughput, degraded and failed fractions,
hedges and utilisation per mode, and the fixed-width table ``parm simulate`` prints.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.sim_engine import ANSWERED, FAILED, REFUSED
from harness.tails import path_counts

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.5", 99.5), ("p99.9", 99.9))
TABLE = (("mode", "{:<7}"), ("workers", "{:>7}"), ("count", "{:>8}"), ("p50", "{:>7.2f}"), ("p90", "{:>7.2f}"),
         ("p99", "{:>7.2f}"), ("p99.9", "{:>8.2f}"), ("max", "{:>8.2f}"), ("mean", "{:>7.2f}"),
         ("gap", "{:>8.2f}"), ("degraded", "{:>8.4f}"), ("failed", "{:>6}"), ("lost", "{:>4}"),
         ("hedges", "{:>6}"), ("util", "{:>5.2f}"))


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Per-mode metrics (latencies in ms) from Sim.run()'s raw arrays."""
    state, arrivals = raw["state"], raw["arrivals"]
    answered = state == ANSWERED
    lat_ms = (raw["done"][answered] - arrivals[answered]) * 1000
    n = len(arrivals)
    out: dict[str, Any] = {"arrivals": n, "count": int(answered.sum()),
                           "failed": int(((state == FAILED) | (state == REFUSED)).sum()),
                           "refused": int((state == REFUSED).sum()),  # 503 at admission: no healthy data worker
                           "wrong": int(raw["wrong"].sum())}  # answered with another query's output
    out["lost"] = n - out["count"] - out["failed"]
    for name, q in PERCENTILES:
        out[name] = float(np.percentile(lat_ms, q)) if len(lat_ms) else float("nan")
    out["max"] = float(lat_ms.max()) if len(lat_ms) else float("nan")
    out["mean"] = float(lat_ms.mean()) if len(lat_ms) else float("nan")
    out["gap"] = out["p99.9"] - out["p50"]  # ParM's tail measure: p99.9 minus median
    # The span ends at the last answer, not at the last deadline timer the run drained.
    span = (float(raw["done"][answered].max()) - float(arrivals[0])) if out["count"] else 0.0
    out["throughput"] = out["count"] / span if span > 0 else 0.0
    out["degraded"] = float(raw["degraded"][answered].mean()) if out["count"] else 0.0
    out["answered_twice"] = int((raw["answers"] > 1).sum())
    paths = raw["path"][answered]
    out["paths"] = path_counts(paths)
    out["tail_paths"] = path_counts(paths[lat_ms >= out["p99.9"]]) if len(lat_ms) else {}  # what the p99.9 is made of
    stats = raw["stats"]
    out.update({"hedges": stats["hedges"], "stats": stats, "wasted_requests": raw["wasted"]})
    n_all = raw["n_data"] + raw["n_extra"]
    busy = raw["busy_data_s"] + raw["busy_extra_s"]
    out["util"] = busy / (n_all * span) if span > 0 else 0.0
    out["util_data"] = raw["busy_data_s"] / (raw["n_data"] * span) if span > 0 else 0.0
    out["util_extra"] = raw["busy_extra_s"] / (raw["n_extra"] * span) if span > 0 and raw["n_extra"] else 0.0
    out["workers"] = n_all
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """One line per mode; latencies in ms, gap = p99.9 - p50."""
    header = " ".join(f"{name:>{_width(fmt)}}" if name != "mode" else f"{name:<7}" for name, fmt in TABLE)
    lines = [header]
    for r in rows:
        lines.append(" ".join(fmt.format(r[name]) for name, fmt in TABLE))
    return "\n".join(lines)


def _width(fmt: str) -> int:
    digits = "".join(ch for ch in fmt.split(":")[1].split(".")[0] if ch.isdigit())
    return int(digits or 0)
