"""``parm simulate``: the command line of the serving simulator (harness.simulate: the real frontend
on simulated time). Prints one table row per mode and the fault plan exactly as run; ``--json``
writes every metric and setting.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.plan import FaultPlan, PlanError, plan_from_arg
from harness.sim_config import MODES, SimConfig, SimConfigError
from harness.simulate import simulate_modes, table


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("simulate", help="discrete-event simulation of the serving modes under a fault plan",
                              description=__doc__)
    p.add_argument("--mode", default="all", choices=[*MODES, "all"])
    p.add_argument("--workers", type=int, default=12, help="n data workers; coded adds n/k parity, equal and "
                   "hedged n/k replicas")
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--rate", type=float, default=1000.0, help="queries/s")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of arrivals")
    p.add_argument("--count", type=int, default=None, help="a fixed number of queries instead of --duration")
    p.add_argument("--arrivals", default="poisson", choices=["poisson", "uniform"])
    p.add_argument("--service", default="fixed:ms=5",
                   help="fixed:ms=5 | exp:mean_ms=5 | lognormal:median_ms=5,sigma=0.5 | file:PATH")
    p.add_argument("--plan", default=None, help="fault plan: a JSON file or inline JSON (harness.plan)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deadline-ms", type=float, default=60_000.0)
    p.add_argument("--hedge-delay-ms", type=float, default=None, help="default: p95 of recent latencies")
    p.add_argument("--group-timeout-ms", type=float, default=20.0)
    p.add_argument("--r", type=int, default=1, help="parity queries per group (coded)")
    p.add_argument("--decode-policy", default=None, choices=["adaptive", "eager", "grace"],
                   help="as parm serve's (default: grace with --decode-grace-ms, else adaptive)")
    p.add_argument("--decode-grace-ms", type=float, default=0.0)
    p.add_argument("--decode-quantile", type=float, default=95.0)
    p.add_argument("--decode-slack", type=float, default=1.25)
    p.add_argument("--no-hedge-fallback", action="store_true", help="coded: no copies of overdue, undecodable queries")
    p.add_argument("--no-health-probes", action="store_true",
                   help="workers stay in rotation without the clients' probe loop (closed-form checks)")
    p.add_argument("--frontend-ms", type=float, default=0.0, help="constant per-query frontend cost")
    p.add_argument("--max-batch", type=int, default=1)
    p.add_argument("--batch-cost", type=float, default=0.0, help="a batch of b costs (1 + c*(b-1)) services")
    p.add_argument("--cancel-at-worker", action="store_true",
                   help="cancelled requests leave the worker's queue (the real worker keeps serving them)")
    p.add_argument("--release-load-on-cancel", action="store_true",
                   help="a cancelled request leaves the in-flight count at once (the frontend's behaviour before "
                        "it kept abandoned requests counted until their reply)")
    p.add_argument("--json", default=None, help="write metrics and settings here")
    p.set_defaults(func=run_simulate)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    plan = plan_from_arg(args.plan) if args.plan else FaultPlan()
    return SimConfig(mode="coded" if args.mode == "all" else args.mode, workers=args.workers, k=args.k,
                     rate=args.rate, duration_s=args.duration, count=args.count, arrivals=args.arrivals,
                     service=args.service, plan=plan, seed=args.seed, deadline_ms=args.deadline_ms,
                     hedge_delay_ms=args.hedge_delay_ms, group_timeout_ms=args.group_timeout_ms,
                     r=args.r, decode_policy=args.decode_policy, decode_grace_ms=args.decode_grace_ms,
                     decode_quantile=args.decode_quantile, decode_slack=args.decode_slack,
                     hedge_fallback=not args.no_hedge_fallback, health_probes=not args.no_health_probes,
                     frontend_ms=args.frontend_ms,
                     max_batch=args.max_batch, batch_cost=args.batch_cost, cancel_at_worker=args.cancel_at_worker,
                     hold_load_until_done=not args.release_load_on_cancel)


def run_simulate(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except (PlanError, SimConfigError) as exc:
        print(f"parm simulate: {exc}", file=sys.stderr)
        return 2
    modes = MODES if args.mode == "all" else (args.mode,)
    rows = simulate_modes(cfg, modes)
    settings = {k: v for k, v in rows[0]["settings"].items() if k != "mode"}
    print(f"simulated {rows[0]['arrivals']} queries, load {settings['load']:.2f} of the {cfg.workers} data "
          f"workers' capacity, service {cfg.service}, seed {cfg.seed}; latencies in ms, gap = p99.9 - p50")
    print(table(rows))
    for r in rows:  # which request or rule answered the tail (frontend.query.PATHS)
        print(f"{r['mode']}: answers at or above p99.9 by path: {r['tail_paths']}; all: {r['paths']}")
    print("plan as run:", json.dumps(cfg.plan.describe()))
    if args.json:
        out = {"settings": settings, "modes": {r["mode"]: {k: v for k, v in r.items() if k != "settings"} for r in rows}}
        Path(args.json).write_text(json.dumps(out, indent=2, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0
