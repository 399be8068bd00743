"""The ``parm bench`` subcommand: flags -> BenchConfig -> harness.bench.run_bench -> table, JSON, PNG.

``register(subparsers)`` follows the parm.cli convention; heavy imports happen in ``run``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

MODES = ("none", "equal", "hedged", "coded", "parm", "berrut")  # = harness.bench_modes.ALL_MODES (numpy-free import here)
DEFAULT_MODES = ("none", "equal", "hedged", "coded", "berrut")  # parm (ParM's decode-at-once) on request


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"modes must be a comma list of {', '.join(MODES)}; got {text!r}")
    return modes


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(r) for r in text.split(",") if r.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rate wants numbers, e.g. 300 or 200,300,400; got {text!r}") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"--rate values must be > 0; got {text!r}")
    return rates


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modes", type=_modes, default=DEFAULT_MODES,
                   help="comma list of none,equal,hedged,coded,parm,berrut; coded: the adaptive decode policy and "
                   "fallback hedging; parm: coded as ParM ran it (decode at once, no fallback) on the same parity "
                   "workers; berrut = coded mode with the training-free Berrut code, its parity queries served "
                   "by the extra replicas")
    p.add_argument("--workers", type=int, default=4, help="data workers N (extra: N/k parity or replicas)")
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--model", default="builtin:linear", help="base model: builtin:linear or a checkpoint")
    p.add_argument("--parity-model", default=None,
                   help="parity checkpoint (its meta gives k and the code); default for builtins: the exact sum parity")
    p.add_argument("--service-time", default="fixed:ms=10",
                   help="every worker's --service-time: fixed:ms=F | exp:mean_ms=F | lognormal:median_ms=F,sigma=S | "
                   "file:PATH.json")
    p.add_argument("--rate", type=_rates, default=(100.0,),
                   help="Poisson arrivals per second; a comma list sweeps load levels on the same workers "
                   "(default 100)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per mode")
    p.add_argument("--plan", default=None, help="fault plan: a JSON file or inline JSON (default: no faults)")
    p.add_argument("--seed", type=int, default=0, help="arrivals, query order (the plan has its own seed)")
    p.add_argument("--dataset", default="fashion-mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--data-dir", default=None, help="folder holding <dataset>/ (else $PARM_DATA, /usr/share/datasets, ...)")
    p.add_argument("--max-batch", type=int, default=1, help="worker batch limit (default 1, as ParM)")
    p.add_argument("--deadline-ms", type=float, default=5000.0)
    p.add_argument("--berrut-r", type=int, default=1,
                   help="berrut mode: parity queries per group, 1..N/k (each on its own extra replica; "
                   "r > 1 loads the replicas r times as much as coded loads its parity workers)")
    p.add_argument("--group-timeout-ms", type=float, default=20.0,
                   help="coded: send a partial group's data uncoded after this long (default 20, the frontend's)")
    p.add_argument("--decode-grace-ms", type=float, default=0.0,
                   help="coded: the grace policy, waiting this long for the real output before decoding "
                        "(0: the frontend's default adaptive policy; parm mode decodes at once, as ParM)")
    p.add_argument("--parity-cost", type=float, default=1.0,
                   help="service-time mode: a parity query costs this many base queries (its model's measured "
                        "compute ratio), so parity workers sleep that much longer")
    p.add_argument("--hedge-delay-ms", type=float, default=None, help="hedged mode: fixed delay (default: the p95 that equal mode measured just before)")
    p.add_argument("--trace", default=None, metavar="DIR",
                   help="coded modes: write the frontend's per-group trace to DIR and report the tail's causes "
                        "(where each slow query's request went, why its group did not answer sooner)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the full report as JSON")
    p.add_argument("--plot", default=None, metavar="PATH", help="write a PNG: tail CDF and percentile bars")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmark serving modes under a fault plan on a local deployment",
                              description="Start a local deployment per mode, drive Poisson load, replay faults.")
    add_bench_arguments(p)
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> Any:
    from harness.bench import BenchConfig
    from harness.plan import FaultPlan, plan_from_arg
    from parm.up_models import default_parity_model

    plan = plan_from_arg(args.plan) if args.plan else FaultPlan()
    code, parity = "sum", args.parity_model
    if not {"coded", "parm"} & set(args.modes):  # berrut needs no parity model: the replicas serve its parity queries
        parity = None
    elif parity is None:
        parity = default_parity_model(args.model, args.k, "sum")
    else:
        code = _checkpoint_code(parity, args.k)
    return BenchConfig(modes=args.modes, n_data=args.workers, k=args.k, model=args.model, parity_model=parity,
                       code=code, service_time=args.service_time, rates=args.rate, duration_s=args.duration,
                       plan=plan, seed=args.seed, dataset=args.dataset, data_dir=args.data_dir,
                       max_batch=args.max_batch, parity_cost=args.parity_cost,
                       deadline_ms=args.deadline_ms, hedge_delay_ms=args.hedge_delay_ms,
                       decode_grace_ms=args.decode_grace_ms, group_timeout_ms=args.group_timeout_ms,
                       progress=not args.no_progress, berrut_r=args.berrut_r, trace_dir=args.trace)


def _checkpoint_code(path: str, k: int) -> str:
    from parity_models import checkpoint
    meta = checkpoint.load(Path(path)).get("meta") or {}
    if meta.get("k") not in (None, k):
        raise SystemExit(f"parm bench: {path} was trained for k={meta.get('k')}, not --k {k}")
    return str(meta.get("code", "concat"))


def run(args: argparse.Namespace) -> int:
    from frontend.errors import ConfigError
    from harness.bench import run_bench
    from harness.plan import PlanError
    from workers.model import parse_service_time

    try:
        parse_service_time(args.service_time)  # fail before starting anything
        cfg = build_config(args)
    except (ConfigError, PlanError, ValueError) as exc:
        print(f"parm bench: {exc}", file=sys.stderr)
        return 2
    rep, runs = asyncio.run(run_bench(cfg))
    print(render(rep))
    write_outputs(rep, runs, args.json, args.plot)
    lost = sum(m["lost"] for run_ in rep["runs"] for m in run_["modes"].values())
    return 1 if lost else 0  # a lost query is a bug, never a result


def write_outputs(rep: dict[str, Any], runs: list[dict[str, Any]], json_path: str | None,
                  plot: str | None) -> None:
    from harness import report
    from harness.bench import answered_latencies
    if json_path:
        report.write_json(rep, json_path)
    if plot:
        for run_, mode_runs in zip(rep["runs"], runs):
            report.plot(answered_latencies(mode_runs), run_["modes"], title_of(rep, run_["rate_qps"]), plot_path(plot, rep, run_))


def plot_path(path: str, rep: dict[str, Any], run_: dict[str, Any]) -> Path:
    """The given path for a single rate; PATH-<rate>qps.png for each rate of a sweep."""
    p = Path(path)
    return p if len(rep["runs"]) == 1 else p.with_name(f"{p.stem}-{run_['rate_qps']:g}qps{p.suffix}")


def title_of(rep: dict[str, Any], rate: float) -> str:
    return (f"N={rep['n_data']}+{rep['n_extra']} k={rep['k']} {rate:g} qps {rep['duration_s']:g} s, "
            f"service {rep['service_time']}, plan {json.dumps(rep['plan']['faults'])[:120]}")


def resource_lines(modes: dict[str, Any]) -> list[str]:
    """Per mode: RSS of the frontend and the workers (first/max/last), overload 503s, malformed requests."""
    from harness.bench_proc import rss_line
    lines = []
    for mode, s in modes.items():
        if s.get("rss"):
            lines.append(f"{mode}: {rss_line(s['rss'])}")
        if s.get("overload_503"):
            lines.append(f"{mode}: {s['overload_503']} x 503, {s['overload_503_with_retry_after']} with Retry-After")
        if s.get("malformed", {}).get("sent"):
            m = s["malformed"]
            lines.append(f"{mode}: malformed requests {m['sent']}, 4xx {m['4xx']}, other {m['other']}")
    return lines


def _berrut(rep: dict[str, Any]) -> str:
    """", berrut r=R on the replicas" when berrut mode ran (older reports have no "modes")."""
    return f", berrut r={rep.get('berrut_r', 1)} on the replicas" if "berrut" in rep.get("modes", ()) else ""


def render(rep: dict[str, Any]) -> str:
    from harness import report
    head = [(f"parm bench {rep['date']} on {rep['machine']['cpus']} CPUs ({rep['machine']['cpu_model']}), "
             f"wall {rep['wall_s']} s (worker start {rep['startup_s']} s)"),
            (f"model {rep['model']} / parity {rep['parity_model']} (code {rep['code']}){_berrut(rep)}, "
             f"N={rep['n_data']}+{rep['n_extra']}, k={rep['k']}, max batch {rep['max_batch']}, "
             f"dataset {rep['dataset']}"),
            (f"load: Poisson {','.join(f'{r:g}' for r in rep['rates_qps'])} qps for {rep['duration_s']:g} s per mode, "
             f"seed {rep['seed']}; service time {rep['service_time']}"),
            f"plan: {json.dumps(rep['plan'])}",
            ("latencies in ms from each query's scheduled arrival; acc_deg = accuracy of the degraded answers; "
             "fe_cpu = frontend CPU / wall (1 core = 100%)")]
    body: list[str] = []
    for run_ in rep["runs"]:
        body += ["", f"rate {run_['rate_qps']:g} qps", report.table(run_["modes"]), "",
                 *report.comparison_lines(run_["comparison"]), *resource_lines(run_["modes"]),
                 *path_lines(run_["modes"]), *cause_lines(run_["modes"])]
    return "\n".join([*head, *body])


def cause_lines(modes: dict[str, dict[str, Any]]) -> list[str]:
    """Per traced mode and tail (--trace): the causes of its slowest queries, most common first."""
    lines = []
    for mode, s in modes.items():
        for tail, t in s.get("tail_causes", {}).items():
            if isinstance(t, dict):
                causes = "; ".join(f"{n} {c}" for c, n in t["causes"].items())
                lines.append(f"{mode} {tail} (>= {t['threshold_ms']} ms in the frontend, {t['queries']} queries): {causes}")
    return lines


def path_lines(modes: dict[str, dict[str, Any]]) -> list[str]:
    """Per mode, which way its answers came, and which way those at or past its p99.9 came."""
    return [f"{mode}: answers by path {s['paths']}; at or past p99.9 {s['tail_paths']}"
            for mode, s in modes.items() if "paths" in s]
