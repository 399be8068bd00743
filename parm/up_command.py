"""``parm up``: a local cluster (the frontend plus data and parity worker processes) that works
with no flags at all: the builtin exact linear model, its sum-code parity model, k=2, port 8080.

It prints where everything listens and writes a state file (parm.cluster_state) holding the
workers' secret, so ``parm fault ADDRESS SPEC`` can reach its workers; the file goes on exit.
"""
from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frontend.app import create_app
from frontend.config import FrontendConfig
from frontend.errors import ConfigError
from parm import cluster_state
from parm.commands import add_frontend_arguments, config_from_args, read_worker_secret, run_on_loop, serve_until_signal
from parm.up_models import AUTO, parity_cost, parity_models, parity_workers, resolve_code
from workers.auth import new_secret
from workers.cluster import LocalCluster, WorkerSpec, cluster_specs
from workers.faults import parse as parse_fault

CODE_HELP = ("erasure code: sum, concat (images), berrut (training-free: parity workers run the base model), or auto: "
             "the --parity-model's own code, sum for a builtin model, berrut for a checkpoint without parity model")


@dataclass
class UpPlan:
    """What ``parm up`` will start, decided from the flags alone (nothing started yet)."""
    code: str
    specs: list[WorkerSpec]
    parity_cost: float | None = None  # base queries one parity query costs (MACs); None: not counted

    def models(self, role: str) -> list[str]:
        return list(dict.fromkeys(s.model for s in self.specs if s.role == role))


def register(subparsers: Any) -> None:
    up = subparsers.add_parser("up", help="start a local cluster: frontend + data and parity workers",
                               description="Start a local coded cluster; with no flags: the builtin exact linear "
                                           "model, sum code, k=2, 2 data + 1 parity workers, port 8080.")
    add_frontend_arguments(up, code=AUTO, code_help=CODE_HELP)
    up.add_argument("--model", default="builtin:linear", help="base model: checkpoint or builtin:NAME")
    up.add_argument("--parity-model", default=None,
                    help="parity model checkpoints, comma-separated, one per parity index 0..r-1 in that order "
                         "(parity worker i runs model i mod r); a builtin:NAME:key=value,... spec keeps its own "
                         "parameters (default for builtin:linear: its exact sum-code parity models)")
    up.add_argument("--workers", type=int, default=2, help="number of data workers N (parity/extra: N/k)")
    up.add_argument("--parity-workers", type=int, default=None,
                    help="parity (or extra) workers; default r*ceil(N/k x the parity model's cost in base "
                         "queries, when it costs more than one): parity keeps pace with the data workers")
    up.add_argument("--max-batch", type=int, default=32, help="requests per worker batch")
    up.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where workers run models")
    up.add_argument("--fault", action="append", default=[], metavar="INDEX=SPEC",
                    help="fault for data worker INDEX at start, e.g. 0=stall (repeatable)")
    up.add_argument("--state-file", default=None, metavar="PATH",
                    help="where to write the cluster's addresses and workers' secret for parm fault (mode 0600, "
                         "removed on exit; default: cluster-PORT.json in $PARM_STATE_DIR, $XDG_RUNTIME_DIR/parm "
                         "or <tmp>/parm-<uid>)")
    up.set_defaults(func=run_up)


def parse_faults(items: list[str], n: int) -> dict[int, str]:
    faults: dict[int, str] = {}
    for item in items:
        index, sep, spec = item.partition("=")
        if not sep or not index.isdigit() or not 0 <= int(index) < n:
            raise ConfigError(f"--fault {item!r} is not INDEX=SPEC with INDEX in 0..{n - 1}")
        try:
            parse_fault(spec)  # refused now, not by a worker process after the cluster started loading
        except ValueError as exc:
            raise ConfigError(f"--fault {item!r}: {exc}") from None
        faults[int(index)] = spec
    return faults


def plan_up(args: argparse.Namespace) -> UpPlan:
    """The workers to start and the code to serve with; ConfigError before anything starts."""
    if args.r < 1:  # checked here too: the number of workers to start depends on it
        raise ConfigError(f"r must be >= 1, got {args.r}")
    code = resolve_code(args.model, args.parity_model, args.code, args.mode)
    # parity worker i runs parity model i mod r, and there are at least r of them: one per index
    extra_models = (parity_models(args.model, args.parity_model, args.k, args.r, code)
                    if args.mode == "coded" else [args.model])
    cost = parity_cost(args.model, extra_models) if args.mode == "coded" else None
    if args.mode == "none":
        n_extra = 0
    elif args.parity_workers is not None:
        if args.parity_workers < args.r:
            raise ConfigError(f"--parity-workers must be >= r={args.r}, got {args.parity_workers}")
        n_extra = args.parity_workers
    else:  # equal/hedged get as many replicas as coded mode would get parity workers for this model
        n_extra = parity_workers(args.workers, args.k, args.r, cost)
    faults = parse_faults(args.fault, args.workers)
    specs = cluster_specs(args.workers, n_extra, args.mode, args.model, extra_models,
                          max_batch=args.max_batch, device=args.device)
    for index, spec in faults.items():
        specs[index].fault = spec
    # the frontend's settings are checked now too, on stand-in addresses, not after N model loads
    stand_in = tuple(("127.0.0.1", 1 + i) for i, _ in enumerate(specs))
    config_from_args(args, stand_in[:args.workers], stand_in[args.workers:], worker_secret="-", code=code)
    return UpPlan(code, specs, cost)


def run_up(args: argparse.Namespace) -> int:
    try:
        return run_on_loop(_up(args), args.event_loop)
    except ConfigError as exc:
        raise SystemExit(f"parm up: {exc}") from None
    except KeyboardInterrupt:  # Ctrl-C before it was listening: the workers are already stopped
        return 130


async def _up(args: argparse.Namespace) -> int:
    plan = plan_up(args)
    # every local cluster authenticates its workers, with the given secret or a fresh one
    secret = read_worker_secret(args) or new_secret()
    cluster = LocalCluster(plan.specs, host="127.0.0.1", secret=secret)
    try:
        await cluster.start()
    except (RuntimeError, asyncio.TimeoutError) as exc:  # a worker exited or hung while loading its model
        raise ConfigError(f"the workers did not start: {exc or 'timed out'}") from None
    written: list[Path] = []
    try:
        cfg = config_from_args(args, cluster.addresses("data"), cluster.addresses("parity"), worker_secret=secret,
                               code=plan.code)

        def listening(port: int) -> str:
            state = cluster_state.ClusterState(f"http://{cfg.host}:{port}", secret, os.getpid(), _entries(cluster))
            try:
                path = args.state_file or cluster_state.default_path(port)
                written.append(cluster_state.write(path, state, private_folder=args.state_file is None))
            except cluster_state.StateError as exc:  # the cluster serves anyway; only parm fault needs the file
                return banner(cfg, plan, cluster, port, None, str(exc))
            return banner(cfg, plan, cluster, port, written[-1])

        await serve_until_signal(create_app(cfg, args.drain_timeout_s), cfg, args.drain_timeout_s, listening)
    finally:
        for path in written:
            cluster_state.remove(path)
        await cluster.stop()
    return 0


def _entries(cluster: LocalCluster) -> list[cluster_state.WorkerEntry]:
    counts: dict[str, int] = {}
    entries = []
    for w in cluster.workers:
        index = counts[w.spec.role] = counts.get(w.spec.role, -1) + 1
        entries.append(cluster_state.WorkerEntry(w.spec.role, index, f"{w.host}:{w.port}", w.spec.model))
    return entries


def banner(cfg: FrontendConfig, plan: UpPlan, cluster: LocalCluster, port: int, state_path: Path | None,
           state_error: str = "") -> str:
    """What a user needs next: where to send queries, what runs where, how to inject a fault."""
    extra = "parity" if cfg.mode == "coded" else "extra"
    entries = _entries(cluster)
    lines = [f"parm up: frontend on http://{cfg.host}:{port} ({cfg.mode}, code {cfg.code}, k={cfg.k}, r={cfg.r}); "
             f"Ctrl-C stops it",
             f"  model {', '.join(plan.models('data'))}" +
             (f"; parity model {', '.join(plan.models('parity'))}" if cfg.mode == "coded" else "")]
    if plan.parity_cost is not None:
        n_parity = sum(1 for s in plan.specs if s.role == "parity")
        lines.append(f"  a parity query costs {plan.parity_cost:.2f} base queries (MACs): {n_parity} parity workers, "
                     f"overhead {plan.parity_cost * cfg.r / cfg.k:.0%} of the data work")
    for role, label in (("data", "data workers:  "), ("parity", f"{extra} workers:")):
        listed = [f"{e.role}:{e.index}={e.address}" for e in entries if e.role == role]
        lines.append(f"  {label} {'  '.join(listed) or '-'}")
    if state_path is not None:
        lines.append(f"  state file: {state_path} (the workers' secret, for parm fault; removed on exit)")
        first = next((e for e in entries if e.role == "data"), None)
        # parm fault looks for state files in the default folder only: elsewhere it must be told
        flag = "" if state_path.parent == cluster_state.state_dir() else f"--cluster {state_path} "
        if first is not None:
            lines.append(f"  try: curl -s http://{cfg.host}:{port}/ready; parm fault {flag}{first.address} stall "
                         f"(or: parm fault {flag}data:0 stall; 'none' heals it)")
    else:
        lines.append(f"  no state file, so parm fault cannot reach the workers: {state_error}")
    return "\n".join(lines)
