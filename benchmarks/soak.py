"""Reliability measurements on a real local deployment (worker processes, the frontend process and
the loadgen process, as ``parm bench``): nothing lost, nothing answered twice, clear errors.

1. soak: >= 100,000 queries in coded mode (k=2, 4 data + 2 parity workers) under one fault plan
   mixing crashes with restarts, data-worker stalls, a parity stall, partitions (drop windows) and
   background contention, with 1% malformed requests alongside; memory sampled every 10 s.
2. overload: about twice the deployment's capacity for 3 minutes with ``--max-pending 256``:
   excess requests get 503 + Retry-After, accepted ones are answered, the frontend's RSS stays flat.

    .venv/bin/python benchmarks/soak.py [--quick] [--only soak|overload]

Writes benchmarks/results/{soak,overload}.{json,md,png} (``--quick``: *_quick.*, a short smoke run).
Exit status 1 if a query was lost or answered twice, or the frontend's counters do not balance.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import report
from harness.bench import BenchConfig, run_bench
from harness.bench_proc import rss_line
from harness.plan import FaultPlan, expand, parse_plan

RESULTS = ROOT / "benchmarks" / "results"
SOAK_QUERIES = 100_000


def soak_plan(duration_s: float) -> FaultPlan:
    """Faults at fixed fractions of the run (written for ~410 s; scaled for --quick). Plan workers
    0-3 are data workers, 4-5 parity workers. Never two data workers down by design at once."""
    f = duration_s / 410.0
    faults: list[dict[str, Any]] = [
        {"kind": "contention", "workers": "all", "rate_per_s": 0.02 / f, "factor": 3, "duration_ms": 1000 * f}]
    for w, at in ((1, 30), (3, 110), (0, 190), (2, 270), (1, 350)):
        faults.append({"kind": "crash", "worker": w, "at_s": at * f, "restart_after_s": 5 * f})
    for w, at, ms in ((2, 60, 3000), (0, 150, 2000), (3, 230, 2000)):
        faults.append({"kind": "stall", "worker": w, "at_s": at * f, "duration_ms": ms * f})
    faults.append({"kind": "stall", "worker": 4, "at_s": 90 * f, "duration_ms": 3000 * f})
    for w, at, ms in ((1, 130, 2000), (3, 300, 1500)):
        faults.append({"kind": "drop", "worker": w, "at_s": at * f, "duration_ms": ms * f})
    return parse_plan({"seed": 11, "faults": faults})


def fault_timeline(cfg: BenchConfig) -> dict[str, Any]:
    """The expanded plan: kills and restarts, stall and drop windows (from, to), contention windows."""
    events = expand(cfg.plan, cfg.n_data + cfg.n_extra, cfg.duration_s)
    out: dict[str, Any] = {"crashes": [], "stalls": [], "drops": [], "contention_windows": 0}
    active: dict[int, set[str]] = {}
    since: dict[tuple[int, str], float] = {}
    for ev in events:
        if ev.action != "spec":
            out["crashes"].append({"t_s": round(ev.t_s, 2), "worker": ev.worker, "action": ev.action})
            continue
        now = {part.split(":", 1)[0] for part in ev.spec.split("+")} & {"stall", "drop", "slow"}
        before = active.get(ev.worker, set())
        for kind in now - before:
            since[(ev.worker, kind)] = ev.t_s
            out["contention_windows"] += kind == "slow"
        for kind in before - now:
            start = since.pop((ev.worker, kind))
            if kind != "slow":
                role = "parity" if ev.worker >= cfg.n_data else "data"
                out[kind + "s"].append({"worker": ev.worker, "role": role, "from_s": round(start, 2),
                                        "to_s": round(ev.t_s, 2)})
        active[ev.worker] = now
    return out


def check(s: dict[str, Any]) -> dict[str, Any]:
    """Client-side and frontend-side accounting of one run; ``ok`` False means lost or duplicated."""
    fe = s["frontend_stats"]
    balance = fe["answered"] + fe["deadline_exceeded"] + fe["defaulted"]
    accepted = s["count"] - s.get("overload_503", 0)
    out = {"sent": s["count"], "answered_200": s["answered"], "failed_by_status":
           {k: v for k, v in s["statuses"].items() if k not in ("0", "200")},
           "failed_by_code": s.get("error_codes", {}), "lost": s["lost"],
           "duplicated": s.get("duplicated", 0),
           "frontend_queries": fe["queries"], "frontend_answered": fe["answered"],
           "frontend_deadline_exceeded": fe["deadline_exceeded"], "frontend_defaulted": fe["defaulted"],
           "frontend_rejected_overload": fe["rejected_overload"], "frontend_pending_at_end": fe["pending"],
           "balance_answered+deadline+defaulted==queries": balance == fe["queries"],
           "frontend_queries==client_accepted": fe["queries"] == accepted,
           "frontend_answered==client_200": fe["answered"] == s["answered"]}
    out["ok"] = bool(out["lost"] == 0 and out["duplicated"] == 0 and all(
        v for k, v in out.items() if "==" in k) and fe["pending"] == 0)
    return out


def headline(rep: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    return {"offered_qps": round(s["count"] / rep["duration_s"], 1), "achieved_qps": round(s["throughput_qps"], 1),
            "p50_ms": round(s["p50"], 1), "p99_ms": round(s["p99"], 1), "p99.9_ms": round(s["p99.9"], 1),
            "max_ms": round(s["max"], 1), "degraded_frac": round(s["frac_degraded"], 4),
            "send_lag_p99_ms": round(s["send_lag_p99_ms"], 1), "send_lag_max_ms": round(s["send_lag_max_ms"], 1),
            "frontend_cpu_util": s["cpu"].get("frontend_util"), "loadgen_cpu_s": s["cpu"].get("loadgen_cpu_s")}


def markdown(name: str, rep: dict[str, Any], s: dict[str, Any], extra: dict[str, Any]) -> str:
    rss = s["rss"]
    lines = [f"# {name} ({rep['date']})", "",
             (f"Machine: {rep['machine']['cpus']} CPUs ({rep['machine']['cpu_model']}), no GPU; "
              f"{rep['machine']['platform']}, Python {rep['machine']['python']}."),
             (f"Deployment: coded, N={rep['n_data']}+{rep['n_extra']} (k={rep['k']}), model {rep['model']}, "
              f"service {rep['service_time']}, max batch {rep['max_batch']}, --max-pending {rep['max_pending']}, "
              f"deadline {rep['deadline_ms']:g} ms."),
             f"Load: Poisson {rep['rates_qps'][0]:g} qps for {rep['duration_s']:g} s; wall {rep['wall_s']} s.", "",
             "| figure | value |", "|---|---|"]
    for key, value in {**extra["headline"], **{k: v for k, v in extra["check"].items()}}.items():
        lines.append(f"| {key} | {json.dumps(value)} |")
    lines += ["", rss_line(rss), ""]
    if extra.get("malformed"):
        lines += [f"Malformed requests: {json.dumps(extra['malformed'])}", ""]
    if extra.get("faults"):
        lines += ["Faults (expanded plan, seconds from the start of load):", "", "```",
                  json.dumps(extra["faults"], indent=1), "```",
                  f"Replay: {json.dumps({k: v for k, v in s['faults_replayed'].items() if k != 'events'})}", ""]
    lines += ["RSS samples (s, frontend MiB, workers MiB):", "",
              ", ".join(f"{x['t_s']:.0f}: {x['frontend_kb'] / 1024:.1f}/{x['workers_kb'] / 1024:.0f}"
                        for x in rss["samples"]), ""]
    return "\n".join(lines)


def plot_rss(rss: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [x["t_s"] for x in rss["samples"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, [x["frontend_kb"] / 1024 for x in rss["samples"]], "o-", label="frontend")
    ax.set(xlabel="seconds from start of load", ylabel="frontend RSS (MiB)", title=title)
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(t, [x["workers_kb"] / 1024 for x in rss["samples"]], "s--", color="C1", label="workers (sum)")
    ax2.set(ylabel="workers RSS, sum (MiB)")
    ax2.set_ylim(bottom=0)
    fig.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def measure(name: str, cfg: BenchConfig, suffix: str) -> bool:
    rep, _ = await run_bench(cfg)
    s = rep["runs"][0]["modes"]["coded"]
    extra: dict[str, Any] = {"headline": headline(rep, s), "check": check(s)}
    if cfg.bad_frac > 0:
        extra["malformed"] = s["malformed"]
    if cfg.plan.rules:
        extra["faults"] = fault_timeline(cfg)
    if name == "overload":
        extra["headline"].update({"accepted": s["count"] - s["overload_503"], "rejected_503": s["overload_503"],
                                  "rejected_503_with_retry_after": s["overload_503_with_retry_after"]})
    rep[name] = extra
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{name}{suffix}"
    report.write_json(rep, stem.with_suffix(".json"))
    text = markdown(name, rep, s, extra)
    stem.with_suffix(".md").write_text(text + "\n")
    plot_rss(s["rss"], f"{name}: RSS every {cfg.rss_interval_s:g} s ({rep['rates_qps'][0]:g} qps offered)",
             stem.with_suffix(".png"))
    print(text, flush=True)
    return bool(extra["check"]["ok"] and (not extra.get("malformed") or extra["malformed"]["other"] == 0))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a ~20 s smoke run of each (files *_quick.*)")
    p.add_argument("--only", choices=["soak", "overload"], default=None)
    p.add_argument("--rate", type=float, default=250.0, help="soak load (qps); measured sustainable on 2 cores")
    p.add_argument("--overload-rate", type=float, default=400.0,
                   help="overload offered load (qps): ~2x the capacity of 4 data workers at 20 ms")
    args = p.parse_args()
    suffix = "_quick" if args.quick else ""
    ok = True
    if args.only in (None, "soak"):
        duration = 20.0 if args.quick else math.ceil(SOAK_QUERIES * 1.015 / args.rate)
        cfg = BenchConfig(modes=("coded",), n_data=4, k=2, service_time="fixed:ms=5", rates=(args.rate,),
                          duration_s=duration, plan=soak_plan(duration), bad_frac=0.01, progress=False,
                          rss_interval_s=2.0 if args.quick else 10.0)
        ok &= asyncio.run(measure("soak", cfg, suffix))
    if args.only in (None, "overload"):
        cfg = BenchConfig(modes=("coded",), n_data=4, k=2, service_time="fixed:ms=20", rates=(args.overload_rate,),
                          duration_s=15.0 if args.quick else 180.0, max_pending=256, progress=False,
                          rss_interval_s=2.0 if args.quick else 10.0)
        ok &= asyncio.run(measure("overload", cfg, suffix))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
