"""Validate ``parm simulate`` against ``parm bench`` at small scale: the same deployment, load and fault
plan on real processes and in the simulator; p50, p99 and p99.9 must agree within 15% per mode.

    .venv/bin/python benchmarks/validate_sim.py            # full run (a few minutes per variant)
    .venv/bin/python benchmarks/validate_sim.py --quick    # short sanity run (numbers not meaningful)

Steps: (1) calibrate the simulator's constant ``--frontend-ms`` once: a no-fault ``parm bench --modes
none`` at low load (little queueing), frontend_ms = its p50 - the fixed service time; (2) per service-time
variant, ``parm bench --modes equal,hedged,coded`` with the fault plan and a fixed hedge delay;
(3) ``parm simulate --mode all`` with the same settings (same plan and plan seed; the simulator draws
its own arrivals and service times), its main seed plus a few more seeds to show the simulator's own
sampling spread at the tail; (4) a table per mode and variant, written to benchmarks/results/validate_sim.*.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PCTS = ("p50", "p99", "p99.9")
MODES = ("equal", "hedged", "coded")
TOL = 0.15
PLAN = {"seed": 1, "faults": [{"kind": "contention", "workers": "all", "rate_per_s": 0.05, "factor": 5,
                               "duration_ms": 1000}]}


def parm(*args: str) -> list[str]:
    return [sys.executable, "-m", "parm.cli", *args]


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=False, stdout=sys.stdout, stderr=sys.stderr)


def bench(tmp: Path, name: str, modes: str, service: str, rate: float, duration: float, plan: Path | None,
          a: argparse.Namespace) -> dict[str, Any]:
    out = tmp / f"bench-{name}.json"
    cmd = parm("bench", "--modes", modes, "--workers", str(a.workers), "--k", str(a.k), "--service-time", service,
               "--rate", f"{rate:g}", "--duration", f"{duration:g}", "--seed", str(a.seed),
               "--hedge-delay-ms", f"{a.hedge_delay_ms:g}", "--group-timeout-ms", f"{a.group_timeout_ms:g}",
               "--no-progress", "--json", str(out))
    if plan is not None:
        cmd += ["--plan", str(plan)]
    run(cmd)
    return json.loads(out.read_text())


def simulate(tmp: Path, service: str, seed: int, frontend_ms: float, plan: Path, duration: float,
             a: argparse.Namespace) -> dict[str, Any]:
    out = tmp / f"sim-{seed}.json"
    cmd = parm("simulate", "--mode", "all", "--workers", str(a.workers), "--k", str(a.k), "--rate", f"{a.rate:g}",
               "--duration", f"{duration:g}", "--service", service, "--plan", str(plan), "--seed", str(seed),
               "--hedge-delay-ms", f"{a.hedge_delay_ms:g}", "--group-timeout-ms", f"{a.group_timeout_ms:g}",
               "--frontend-ms", f"{frontend_ms:.3f}", "--max-batch", "1", "--json", str(out))
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def rel(sim: float, real: float) -> float:
    return (sim - real) / real if real else float("nan")


def compare(bench_modes: dict[str, Any], sim_runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in MODES:
        b, s = bench_modes[mode], sim_runs[0]["modes"][mode]
        row: dict[str, Any] = {"bench_count": b["count"], "sim_count": s["count"], "bench_lost": b.get("lost"),
                               "bench_failed": b.get("failed"), "bench_degraded": b.get("frac_degraded"),
                               "sim_degraded": s.get("degraded")}
        for p in PCTS:
            spread = [r["modes"][mode][p] for r in sim_runs]
            d = rel(s[p], b[p])
            row[p] = {"bench": b[p], "sim": s[p], "rel_diff": d, "within_15pct": abs(d) <= TOL,
                      "sim_seeds_min": min(spread), "sim_seeds_max": max(spread),
                      "bench_inside_sim_seed_range": min(spread) <= b[p] <= max(spread)}
        out[mode] = row
    return out


def table(variant: dict[str, Any]) -> str:
    lines = [f"| mode | pct | bench (ms) | simulate (ms) | sim - bench | within 15% | sim over {variant['sim_seeds']} seeds (ms) |",
             "|---|---|---|---|---|---|---|"]
    for mode, row in variant["comparison"].items():
        for p in PCTS:
            c = row[p]
            lines.append(f"| {mode} | {p} | {c['bench']:.1f} | {c['sim']:.1f} | {c['rel_diff'] * 100:+.1f}% | "
                         f"{'yes' if c['within_15pct'] else '**no**'} | {c['sim_seeds_min']:.1f}-{c['sim_seeds_max']:.1f} |")
    return "\n".join(lines)


def render(rep: dict[str, Any]) -> str:
    cal = rep["calibration"]
    head = [f"# Simulator validated against parm bench ({rep['date']})", "",
            f"Command: `{rep['command']}`", "",
            f"Machine: {rep['machine']['cpus']} CPUs ({rep['machine']['cpu_model']}), no GPU, "
            f"Python {rep['machine']['python']}.", "",
            f"Deployment: {rep['workers']} data workers + {rep['workers'] // rep['k']} parity (coded) or replicas "
            f"(equal, hedged), k={rep['k']}, max batch 1, Poisson {rep['rate']:g} qps for {rep['duration_s']:g} s "
            f"per mode, bench seed {rep['seed']}, hedge delay {rep['hedge_delay_ms']:g} ms (fixed, both sides), "
            f"group timeout {rep['group_timeout_ms']:g} ms. Plan: `{json.dumps(rep['plan'])}`.", "",
            f"Calibration (once): no-fault `parm bench --modes none` at {cal['rate']:g} qps, {cal['duration_s']:g} s, "
            f"{cal['service']}: p50 {cal['bench_p50_ms']:.2f} ms - service {cal['service_ms']:g} ms = "
            f"`--frontend-ms {cal['frontend_ms']:.2f}` for every simulate run.", ""]
    body: list[str] = []
    for v in rep["variants"]:
        n_in = sum(v["comparison"][m][p]["within_15pct"] for m in MODES for p in PCTS)
        body += [f"## service {v['service']}: {n_in}/{len(MODES) * len(PCTS)} within 15%", "", table(v), ""]
        for m in MODES:
            r = v["comparison"][m]
            body.append(f"- {m}: bench {r['bench_count']} answered (lost {r['bench_lost']}, failed {r['bench_failed']}, "
                        f"degraded {r['bench_degraded']:.3f}); simulate {r['sim_count']} (degraded {r['sim_degraded']:.3f})")
        body.append("")
    return "\n".join(head + body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short sanity run (8 s per mode); prints, writes no result files")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--rate", type=float, default=55.0)
    ap.add_argument("--duration", type=float, default=90.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--services", default="fixed:ms=40,exp:mean_ms=40",
                    help="service-time variants, separated by ';' or ',' between specs (default fixed and exp 40 ms)")
    ap.add_argument("--hedge-delay-ms", type=float, default=60.0)
    ap.add_argument("--group-timeout-ms", type=float, default=20.0)
    ap.add_argument("--sim-seeds", type=int, default=5, help="simulate seeds 0..n-1 (seed 0 is the one compared)")
    ap.add_argument("--calib-rate", type=float, default=10.0)
    ap.add_argument("--calib-duration", type=float, default=20.0)
    a = ap.parse_args()
    services = [s for s in a.services.replace(";", " ").replace(",exp", " exp").replace(",fixed", " fixed")
                .replace(",lognormal", " lognormal").split() if s]
    if a.quick:
        a.duration, a.calib_duration, a.sim_seeds = 8.0, 5.0, 2
        services = services[:1]
    rep: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/validate_sim.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "cpu_model": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                                       if ln.startswith("model name")), "")},
        "workers": a.workers, "k": a.k, "rate": a.rate, "duration_s": a.duration, "seed": a.seed,
        "hedge_delay_ms": a.hedge_delay_ms, "group_timeout_ms": a.group_timeout_ms, "plan": PLAN, "tolerance": TOL,
        "variants": []}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="validate-sim-") as tmp_:
        tmp = Path(tmp_)
        plan = tmp / "plan.json"
        plan.write_text(json.dumps(PLAN))
        cal_service = "fixed:ms=40" if not services[0].startswith("fixed") else services[0]
        cal_ms = float(cal_service.split("=", 1)[1])
        cb = bench(tmp, "calib", "none", cal_service, a.calib_rate, a.calib_duration, None, a)
        p50 = cb["runs"][0]["modes"]["none"]["p50"]
        rep["calibration"] = {"rate": a.calib_rate, "duration_s": a.calib_duration, "service": cal_service,
                              "service_ms": cal_ms, "bench_p50_ms": p50, "frontend_ms": max(p50 - cal_ms, 0.0),
                              "bench_p99_ms": cb["runs"][0]["modes"]["none"]["p99"]}
        fe = rep["calibration"]["frontend_ms"]
        print(f"calibration: bench p50 {p50:.2f} ms -> --frontend-ms {fe:.2f}", flush=True)
        for service in services:
            b = bench(tmp, service.split(":")[0], ",".join(MODES), service, a.rate, a.duration, plan, a)
            sims = [simulate(tmp, service, s, fe, plan, a.duration, a) for s in range(a.sim_seeds)]
            v = {"service": service, "sim_seeds": a.sim_seeds, "bench_wall_s": b["wall_s"],
                 "bench_machine": b["machine"], "comparison": compare(b["runs"][0]["modes"], sims),
                 "bench_modes": {m: {k: b["runs"][0]["modes"][m].get(k) for k in
                                     ("count", "p50", "p90", "p99", "p99.5", "p99.9", "max", "mean", "degraded",
                                      "lost", "failed", "hedge_delay_ms", "send_lag_p99_ms", "fe_cpu")}
                                 for m in MODES},
                 "sim_modes": {m: {k: sims[0]["modes"][m].get(k) for k in
                                   ("count", "p50", "p90", "p99", "p99.5", "p99.9", "max", "mean", "degraded")}
                               for m in MODES}}
            rep["variants"].append(v)
            # write after each variant, so a long run leaves results even if stopped
            if not a.quick:
                (RESULTS / "validate_sim.json").write_text(json.dumps(rep, indent=2, default=float) + "\n")
                (RESULTS / "validate_sim.md").write_text(render(rep) + "\n")
            print(f"\nservice {service}\n{table(v)}\n", flush=True)
    print(render(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
