"""Frontend benchmark: throughput and added latency of `coded` (k=2, sum code) versus `none` pass-through, with
builtin:linear workers, load from benchmarks/loadgen.py in its own process, and a direct worker-call baseline.

    .venv/bin/python benchmarks/frontend_bench.py [--quick]   -> benchmarks/results/frontend.json
    .venv/bin/python benchmarks/frontend_bench.py --protocol-floor --lean   (adds the floor without aiohttp's request
                       layer, and none and coded through parm serve --predict-port, the lean listener)
    .venv/bin/python benchmarks/frontend_bench.py --isolate --out benchmarks/results/frontend_isolated.json
                       (frontends on CPU 0 alone, workers and load generator on the others)
    .venv/bin/python benchmarks/frontend_bench.py --scale 2   -> benchmarks/results/frontend_scale.json
                       (coded through 1 and through 2 `parm serve --processes` side by side, closed loop)
    sudo .venv/bin/python benchmarks/frontend_bench.py --scale 2 --cpu-cap 0.4   -> .../frontend_scale_cpu_cap.json
                       (each frontend process capped at 0.4 CPU by a cgroup: on a 2-core machine it stands
                        for one core of a larger one, and the workers and load generator keep the rest)
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cpu_cap import CpuCaps
from frontend_procs import Frontend, addrs, brief, run_load, start_floor, start_frontend, stop_process
from frontend_profile import format_profile, summarize_profile
from results_file import write_json

from harness import trace_steps
from harness.bench_proc import cpu_model
from workers.cluster import LocalCluster, WorkerSpec

RESULTS = ROOT / "benchmarks" / "results" / "frontend.json"
SCALE_RESULTS = ROOT / "benchmarks" / "results" / "frontend_scale.json"
CAPPED_SCALE_RESULTS = ROOT / "benchmarks" / "results" / "frontend_scale_cpu_cap.json"
TARGETS = {"throughput_ratio": 0.90, "added_p50_ms": 1.0, "added_p99_ms": 3.0, "coded_cpu_us": 100.0}

# -- phases -------------------------------------------------------------------------------------

async def saturation(targets: dict[str, list[str]], pids: dict[str, dict[str, int]], args: argparse.Namespace,
                     rounds: int, fmt: str) -> dict[str, list[dict[str, Any]]]:
    """Closed loop at ``--concurrency`` in flight, modes interleaved each round: achieved rate = capacity."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for r in range(rounds):
        for name, target in targets.items():
            s = await run_load(target, ["--closed", str(args.concurrency)], args.sat_s, args.warmup_s, fmt, pids[name])
            runs[name].append(s)
            print(brief(name, s) + f"  [saturation {fmt}, round {r + 1}]", flush=True)
    return runs


async def moderate(targets: dict[str, list[str]], pids: dict[str, dict[str, int]], args: argparse.Namespace,
                   rate: float) -> dict[str, list[dict[str, Any]]]:
    """Open-loop Poisson at the same offered rate for every target, interleaved each round."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for r in range(args.rounds):
        for name, target in targets.items():
            s = await run_load(target, ["--rate", f"{rate:.1f}", "--seed", str(r)], args.mod_s, args.warmup_s,
                               args.format, pids[name])
            runs[name].append(s)
            print(brief(name, s) + f"  [moderate, round {r + 1}]", flush=True)
    return runs


async def profile_mode(cluster: LocalCluster, mode: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Run a frontend under cProfile through a closed-loop run; where its CPU time goes."""
    prof = log_dir / f"frontend-{mode}.prof"
    fe = await start_frontend(cluster, mode, args, log_dir, profile_to=prof)
    try:
        s = await run_load(["--url", fe.url], ["--closed", str(args.concurrency)], args.profile_s, 0.5,
                           args.format, {"frontend": fe.proc.pid})
    finally:
        await stop_process(fe.proc, signal.SIGINT)
    print(brief(f"prof-{mode}", s), flush=True)
    return summarize_profile(prof, s["ok_total"])


async def trace_mode(cluster: LocalCluster, mode: str, args: argparse.Namespace, log_dir: Path,
                     rate: float) -> dict[str, Any]:
    """A fresh frontend with --trace-file through one moderate-load run: where each query's time went
    inside it (harness.trace_steps), next to the latency the load generator saw."""
    path = log_dir / f"trace-{mode}.jsonl"
    fe = await start_frontend(cluster, mode, args, log_dir, trace_to=path)
    try:
        s = await run_load(["--url", fe.url], ["--rate", f"{rate:.1f}", "--seed", "7"], args.mod_s, args.warmup_s,
                           args.format, {"frontend": fe.proc.pid})
    finally:
        await stop_process(fe.proc)  # SIGTERM: the trace is written at shutdown
    print(brief(f"trace-{mode}", s), flush=True)
    return {"loadgen_p50_ms": s["p50_ms"], "loadgen_p99_ms": s["p99_ms"], **trace_steps.summarize(path)}


async def scaling(cluster: LocalCluster, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Closed loop through coded frontends of 1 and ``--scale`` processes, each on asyncio's loop and on
    uvloop, all interleaved each round: what a second process and what uvloop buy, side by side."""
    variants = [(n, loop) for n in (1, args.scale) for loop in ("asyncio", "uvloop")]
    caps = CpuCaps(args.cpu_cap) if args.cpu_cap is not None else None  # fails here, before anything starts, if it cannot
    fes = {}
    worker_pids = {f"{w.spec.role}{i}": w.proc.pid for i, w in enumerate(cluster.workers)}
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        for n, loop in variants:
            fe = fes[(n, loop)] = await start_frontend(cluster, "coded", argparse.Namespace(**{**vars(args), "event_loop": loop}),
                                                       log_dir, processes=n)
            if caps is not None:
                for pid in serving_pids(fe.proc.pid):
                    caps.cap(pid)
        for r in range(args.rounds):
            for (n, loop), fe in fes.items():
                serving = {f"frontend{i}": pid for i, pid in enumerate(serving_pids(fe.proc.pid))}
                s = await run_load(["--url", fe.url], ["--closed", str(args.concurrency)], args.sat_s, args.warmup_s,
                                   args.format, {**serving, **worker_pids})
                s["cpu_us_per_answer"]["frontend"] = sum(s["cpu_us_per_answer"].pop(k) for k in serving)
                runs[(n, loop)].append(s)
                print(brief(f"x{n} {loop}", s) + f"  [scaling, round {r + 1}]", flush=True)
    finally:
        for fe in fes.values():
            await stop_process(fe.proc)
        if caps is not None:
            caps.close()
    rate = {v: med(runs[v], "achieved_rate") for v in variants}
    ratios = {f"x{args.scale}_over_x1_{loop}": rate[(args.scale, loop)] / rate[(1, loop)] for loop in ("asyncio", "uvloop")}
    ratios.update({f"uvloop_over_asyncio_x{n}": rate[(n, "uvloop")] / rate[(n, "asyncio")] for n in (1, args.scale)})
    print("\n" + "\n".join(f"  x{n} {loop:<8} {rate[(n, loop)]:8.1f} req/s, frontend cpu "
                            f"{statistics.median(r['cpu_us_per_answer']['frontend'] for r in runs[(n, loop)]):.0f} us/answer"
                            for n, loop in variants))
    cap = f"; each frontend process capped at {args.cpu_cap:g} CPU" if args.cpu_cap else ""
    print("  " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()) + f" (medians of {args.rounds} rounds{cap})")
    return {"runs": {f"x{n}_{loop}": v for (n, loop), v in runs.items()}, "processes": args.scale, "ratios": ratios,
            "cpu_cap_per_process": args.cpu_cap}


def serving_pids(pid: int) -> list[int]:
    """The frontend's serving processes: itself, or the children of parm serve --processes N."""
    try:
        kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        kids = []
    return kids or [pid]


# -- report -------------------------------------------------------------------------------------

def med(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def med_cpu(runs: list[dict[str, Any]]) -> float:
    """The frontend's median CPU per answer over the runs (µs)."""
    return statistics.median(r["cpu_us_per_answer"]["frontend"] for r in runs)


def verdicts(sat: dict[str, list[dict[str, Any]]], mod: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    ratio = med(sat["coded"], "achieved_rate") / med(sat["none"], "achieved_rate")
    out: dict[str, Any] = {"throughput_ratio_coded_over_none": ratio, "throughput_ratio_met": ratio >= TARGETS["throughput_ratio"]}
    for mode in [m for m in ("floor", "pfloor", "none", "coded", "none-l", "coded-l") if m in sat]:
        cpu = statistics.median(r["cpu_us_per_answer"]["frontend"] for r in sat[mode])
        out[f"frontend_cpu_us_{mode}"] = cpu
        for q in ("p50", "p99"):
            added = med(mod[mode], f"{q}_ms") - med(mod["direct"], f"{q}_ms")
            out[f"added_{q}_ms_{mode}"] = added
            out[f"added_{q}_met_{mode}"] = added <= TARGETS[f"added_{q}_ms"]
    out["coded_cpu_met"] = out["frontend_cpu_us_coded"] <= TARGETS["coded_cpu_us"]
    if "coded-l" in sat:  # through the lean listener (parm serve --predict-port)
        out["throughput_ratio_lean"] = med(sat["coded-l"], "achieved_rate") / med(sat["none-l"], "achieved_rate")
    return out


def format_tables(sat: dict[str, list[dict[str, Any]]], mod: dict[str, list[dict[str, Any]]], rate: float,
                  v: dict[str, Any]) -> str:
    lines = ["", "Saturation (closed loop; median over rounds)",
             f"  {'target':<8} {'max req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'frontend cpu us/ans':>20}"]
    for name, runs in sat.items():
        fe_cpu = statistics.median(r["cpu_us_per_answer"].get("frontend", float("nan")) for r in runs)
        lines.append(f"  {name:<8} {med(runs, 'achieved_rate'):10.1f} {med(runs, 'p50_ms'):8.2f} "
                     f"{med(runs, 'p99_ms'):8.2f} {fe_cpu:20.0f}")
    lines += [f"  throughput coded/none = {v['throughput_ratio_coded_over_none']:.3f} (target >= 0.90: "
              f"{'MET' if v['throughput_ratio_met'] else 'MISSED'})"
              + (f"; through the lean listener (-l) {v['throughput_ratio_lean']:.3f}" if "throughput_ratio_lean" in v else ""),
              f"  frontend cpu per coded answer {v['frontend_cpu_us_coded']:.0f} us (target <= 100: "
              f"{'MET' if v['coded_cpu_met'] else 'MISSED'}); the bare HTTP stack (floor) {v['frontend_cpu_us_floor']:.0f} us"
              + (f", without aiohttp's request layer (pfloor) {v['frontend_cpu_us_pfloor']:.0f} us"
                 if "frontend_cpu_us_pfloor" in v else ""),
              "",
              f"Moderate load (Poisson {rate:.0f} req/s, same for all; median over rounds)",
              f"  {'target':<8} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}"]
    for name, runs in mod.items():
        add50 = v.get(f"added_p50_ms_{name}")
        add99 = v.get(f"added_p99_ms_{name}")
        extra = "" if add50 is None else (f" {add50:10.2f} {add99:10.2f}  p50<=1ms {'MET' if v[f'added_p50_met_{name}'] else 'MISSED'},"
                                          f" p99<=3ms {'MET' if v[f'added_p99_met_{name}'] else 'MISSED'}")
        lines.append(f"  {name:<8} {med(runs, 'p50_ms'):8.2f} {med(runs, 'p99_ms'):8.2f}{extra}")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------

def isolate_frontends(args: argparse.Namespace) -> None:
    """--isolate: frontends on the first CPU alone; this process, hence workers and load generator, on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--isolate needs at least 2 CPUs")
    args.frontend_cpus = {cpus[0]}
    os.sched_setaffinity(0, set(cpus[1:]))


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="frontend_bench_"))
    if args.isolate:
        isolate_frontends(args)
    specs = [WorkerSpec("data", "builtin:linear", threads=1), WorkerSpec("data", "builtin:linear", threads=1),
             WorkerSpec("parity", "builtin:linear:parity_k=2", threads=1)]
    cluster = LocalCluster(specs)
    await cluster.start()
    if args.scale:
        try:
            return {"scaling": await scaling(cluster, args, log_dir)}
        finally:
            await cluster.stop()
    frontends: list[Frontend] = []
    try:
        frontends.append(await start_floor(log_dir, getattr(args, "frontend_cpus", None)))  # one at a time: a failed start still stops the others
        if args.protocol_floor:
            frontends.append(await start_floor(log_dir, getattr(args, "frontend_cpus", None), "protocol_floor.py", "pfloor"))
        for mode in ("none", "coded"):
            frontends.append(await start_frontend(cluster, mode, args, log_dir))
        worker_pids = {f"{w.spec.role}{i}": w.proc.pid for i, w in enumerate(cluster.workers)}
        targets = {"direct": ["--worker", addrs(cluster, "data")], **{fe.mode: ["--url", fe.url] for fe in frontends}}
        pids = {"direct": worker_pids, **{fe.mode: {"frontend": fe.proc.pid, **worker_pids} for fe in frontends}}
        for fe in frontends:  # --lean: the same processes through their lean predict listener too
            if fe.lean_port is not None:
                targets[f"{fe.mode}-l"], pids[f"{fe.mode}-l"] = ["--url", fe.lean_url], pids[fe.mode]
        for fe in frontends[:2 if args.protocol_floor else 1]:  # the floors call no worker
            pids[fe.mode] = {"frontend": fe.proc.pid}
        print(f"workers: data {addrs(cluster, 'data')}, parity {addrs(cluster, 'parity')}; logs in {log_dir}", flush=True)
        sat = await saturation(targets, pids, args, args.rounds, args.format)
        other_fmt = "json" if args.format == "msgpack" else "msgpack"
        other = {m: targets[m] for m in ("none", "coded", "none-l", "coded-l") if m in targets}
        sat_other = {} if args.quick else await saturation(other, pids, args, 1, other_fmt)
        rate = args.moderate_rate or args.moderate_fraction * min(med(sat["none"], "achieved_rate"),
                                                                  med(sat["coded"], "achieved_rate"))
        mod = await moderate(targets, pids, args, rate)
    finally:
        for fe in frontends:
            await stop_process(fe.proc)
    try:
        profiles = {} if args.no_profile else {m: await profile_mode(cluster, m, args, log_dir) for m in ("none", "coded")}
        traces = {m: await trace_mode(cluster, m, args, log_dir, rate) for m in ("none", "coded")} if args.trace else {}
    finally:
        await cluster.stop()
    v = verdicts(sat, mod)
    print(format_tables(sat, mod, rate, v))
    if sat_other:
        print(f"  {other_fmt} bodies, saturation: " + ", ".join(
            f"{m} {med(runs, 'achieved_rate'):.1f}/s ({med_cpu(runs):.0f} us)" for m, runs in sat_other.items()))
    for mode, prof in profiles.items():
        print(format_profile(mode, prof))
    if traces:
        print(f"\nInside the frontend at {rate:.0f} req/s (traced run; loadgen p50/p99 beside it):")
        for mode, t in traces.items():
            print(trace_steps.format_steps(mode, t) + f"  loadgen {t['loadgen_p50_ms']:.2f}/{t['loadgen_p99_ms']:.2f}")
    return {"traces": traces, "frontend_commands": {fe.mode: " ".join(fe.command[1:]) for fe in frontends}, "moderate_rate": rate,
            "saturation": sat, f"saturation_{other_fmt}": sat_other, "moderate": mod, "verdicts": v,
            "targets": TARGETS, "profiles": profiles}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="~1 minute sanity run (1 round, short runs)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per phase (default 3; 1 with --quick)")
    p.add_argument("--sat-s", type=float, default=None, help="seconds per saturation run (default 6; 3 quick)")
    p.add_argument("--mod-s", type=float, default=None, help="seconds per moderate-load run (default 8; 4 quick)")
    p.add_argument("--profile-s", type=float, default=None, help="seconds per profiled run (default 6; 3 quick)")
    p.add_argument("--warmup-s", type=float, default=None, help="uncounted seconds at the start of each run")
    p.add_argument("--concurrency", type=int, default=32, help="in-flight requests in the saturation runs")
    p.add_argument("--moderate-fraction", type=float, default=0.5, help="moderate load as a fraction of capacity")
    p.add_argument("--moderate-rate", type=float, default=None,
                   help="moderate load in req/s (default: --moderate-fraction of capacity); fixed, to compare commits")
    p.add_argument("--format", choices=["msgpack", "json"], default="msgpack")
    p.add_argument("--lean", action="store_true",
                   help="also measure none and coded through their lean predict listener (parm serve --predict-port), "
                        "as none-l and coded-l")
    p.add_argument("--protocol-floor", action="store_true",
                   help="also measure benchmarks/protocol_floor.py (needs httptools): the floor without aiohttp's request layer")
    p.add_argument("--frontend-log-level", default="WARNING", help="INFO logs every request (aiohttp access log)")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--trace", action="store_true",
                   help="also trace none and coded at the moderate load: time per step inside the frontend")
    p.add_argument("--event-loop", default="auto", choices=["auto", "uvloop", "asyncio"],
                   help="the frontends' event loop (parm serve --event-loop)")
    p.add_argument("--scale", type=int, default=0, metavar="N",
                   help="only compare coded through 1 and through N frontend processes (parm serve --processes N)")
    p.add_argument("--isolate", action="store_true",
                   help="frontends pinned to the first CPU alone, workers and load generator to the others: what the "
                        "frontend adds when it does not share its core (as when workers are on other machines)")
    p.add_argument("--cpu-cap", type=float, default=None, metavar="CPUS",
                   help="with --scale: cap each frontend process at CPUS (a cgroup each; needs root): one core of a "
                        "larger machine per process, the rest left to workers and load generator")
    p.add_argument("--out", type=Path, default=None, help=f"default {RESULTS} ({SCALE_RESULTS} with --scale, {CAPPED_SCALE_RESULTS.name} with --cpu-cap)")
    args = p.parse_args(argv)
    if args.cpu_cap is not None and not args.scale:
        p.error("--cpu-cap applies to --scale runs")
    if args.out is None:
        args.out = (CAPPED_SCALE_RESULTS if args.cpu_cap else SCALE_RESULTS) if args.scale else RESULTS
    q = args.quick
    for name, full, quick in (("rounds", 3, 1), ("sat_s", 6.0, 3.0), ("mod_s", 8.0, 4.0), ("profile_s", 6.0, 3.0),
                              ("warmup_s", 1.0, 0.5)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    t0 = time.perf_counter()
    result = asyncio.run(bench(args))
    report = {"benchmark": "frontend", "date": dt.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join([".venv/bin/python", "benchmarks/frontend_bench.py", *argv]),
              "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
                          "loadavg_at_end": os.getloadavg()},
              "setup": {"data_workers": 2, "parity_workers": 1, "model": "builtin:linear (784x10)", "threads": 1,
                        "k": 2, "code": "sum", "format": args.format, "concurrency": args.concurrency,
                        "rounds": args.rounds, "frontend_log_level": args.frontend_log_level,
                        "event_loop": args.event_loop, "isolate": args.isolate, "lean": args.lean},
              **result, "wall_s": time.perf_counter() - t0}
    write_json(args.out, report)
    print(f"\nwrote {args.out} ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
