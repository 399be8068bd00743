"""Subcommands of the frontend: ``parm serve`` (frontend only), ``parm up`` (local cluster:
frontend plus worker processes) and ``parm fault`` (change a worker's fault at run time)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from aiohttp import web

from frontend.app import create_app
from frontend.cluster import LocalCluster, cluster_specs
from frontend.config import MODES, FrontendConfig, parse_address, parse_addresses
from frontend.errors import ConfigError
from frontend.handlers import SERVICE
from frontend.up_models import default_parity_model, parity_models  # noqa: F401 (parm bench imports the first here)
from workers.auth import AuthError, new_secret, read_secret


def add_frontend_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--model-name", default="parm", help="the model's name on the V2 API (/v2/models/NAME)")
    p.add_argument("--k", type=int, default=2, help="queries per coding group")
    p.add_argument("--r", type=int, default=1,
                   help="parity queries per group: up to r stragglers per group are decoded (every code; sum and "
                        "concat need r learned parity models, one per parity index)")
    p.add_argument("--code", default="concat",
                   help="erasure code: concat (images) or sum (learned parity models), "
                        "berrut (training-free: parity workers run the base model)")
    p.add_argument("--mode", default="coded", choices=list(MODES),
                   help="coded: parity workers; equal: extra replicas; hedged: extra replicas + hedged requests")
    p.add_argument("--hedge-delay-ms", type=float, default=None,
                   help="hedged mode: re-send after this long (default: the p95 of recent latencies)")
    p.add_argument("--deadline-ms", type=float, default=1000.0, help="default per-request deadline")
    p.add_argument("--group-timeout-ms", type=float, default=20.0,
                   help="close a group with fewer than k queries after this long (served uncoded)")
    p.add_argument("--decode-grace-ms", type=float, default=0.0,
                   help="wait this long for a straggler's real output before decoding it (0: decode at once)")
    p.add_argument("--default-output", default=None,
                   help="comma-separated output given (flagged default) at the deadline instead of a 504")
    p.add_argument("--max-pending", type=int, default=4096, help="admission limit; beyond it 503 + Retry-After")
    p.add_argument("--health-interval-s", type=float, default=1.0)
    p.add_argument("--auth-token-file", default=None,
                   help="require 'Authorization: Bearer TOKEN' on the API (TOKEN read from this file; "
                        "or set PARM_AUTH_TOKEN); the probes /health, /ready, /metrics stay open")
    p.add_argument("--worker-secret-file", default=None,
                   help="shared secret for the workers' handshake (or $PARM_WORKER_SECRET); parm up makes one")
    p.add_argument("--drain-timeout-s", type=float, default=5.0, help="on SIGTERM, wait this long for in-flight queries")


def config_from_args(args: argparse.Namespace, data: Any, parity: Any, worker_secret: str | None = None) -> FrontendConfig:
    default = tuple(float(v) for v in args.default_output.split(",")) if args.default_output else None
    return FrontendConfig(data=data, parity=parity, model_name=args.model_name, k=args.k, r=args.r, code=args.code, mode=args.mode, host=args.host,
                          port=args.port, deadline_ms=args.deadline_ms, group_timeout_ms=args.group_timeout_ms,
                          decode_grace_ms=args.decode_grace_ms, hedge_delay_ms=args.hedge_delay_ms,
                          default_output=default, max_pending=args.max_pending,
                          health_interval_s=args.health_interval_s, auth_token=read_token(args.auth_token_file),
                          worker_secret=worker_secret if worker_secret is not None else _worker_secret(args))


def _worker_secret(args: argparse.Namespace) -> str | None:
    try:
        return read_secret(args.worker_secret_file)
    except AuthError as exc:
        raise ConfigError(str(exc)) from exc


def read_token(path: str | None) -> str | None:
    """The API token: from the file if given, else $PARM_AUTH_TOKEN, else none (no auth)."""
    try:
        return read_secret(path, env="PARM_AUTH_TOKEN")
    except AuthError as exc:
        raise ConfigError(f"--auth-token-file: {exc}") from exc


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the HTTP frontend against running workers")
    add_frontend_arguments(serve)
    serve.add_argument("--data", required=True, help="data workers HOST:PORT,...")
    serve.add_argument("--parity", default="", help="parity workers HOST:PORT,... (coded mode)")
    serve.set_defaults(func=run_serve)

    up = subparsers.add_parser("up", help="start a local cluster: frontend + data and parity workers")
    add_frontend_arguments(up)
    up.add_argument("--model", default="builtin:linear", help="base model: checkpoint or builtin:NAME")
    up.add_argument("--parity-model", default=None,
                    help="parity model checkpoints, comma-separated, one per parity index 0..r-1 in that order "
                         "(parity worker i runs model i mod r); a builtin:NAME:key=value,... spec keeps its own "
                         "parameters (default for builtin:linear: its exact sum-code parity models)")
    up.add_argument("--workers", type=int, default=2, help="number of data workers N (parity/extra: N/k)")
    up.add_argument("--max-batch", type=int, default=32)
    up.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    up.add_argument("--fault", action="append", default=[], metavar="INDEX=SPEC",
                    help="fault for data worker INDEX at start, e.g. 0=stall (repeatable)")
    up.set_defaults(func=run_up)

    fault = subparsers.add_parser("fault", help="set a running worker's fault injection")
    fault.add_argument("address", help="worker HOST:PORT")
    fault.add_argument("spec", help="fault spec, e.g. stall, none, delay:ms=50")
    fault.add_argument("--worker-secret-file", default=None, help="the workers' shared secret (or $PARM_WORKER_SECRET)")
    fault.set_defaults(func=run_fault)


def run_serve(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args, parse_addresses(args.data), parse_addresses(args.parity))
    except ConfigError as exc:
        raise SystemExit(f"parm serve: {exc}") from None
    async def serve() -> None:
        await serve_until_signal(create_app(cfg, args.drain_timeout_s), cfg, args.drain_timeout_s,
                                 f"parm serve: frontend on http://{cfg.host}:{cfg.port} ({cfg.mode}, k={cfg.k})")
    asyncio.run(serve())
    return 0


async def serve_until_signal(app: web.Application, cfg: FrontendConfig, drain_timeout_s: float, banner: str) -> None:
    """Serve until SIGINT/SIGTERM; then keep listening while answering 503 to new requests, drain
    the queries in flight (up to ``drain_timeout_s``), and only then close (uvicorn's order)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, cfg.host, cfg.port).start()
        print(banner, flush=True)
        await _wait_for_signal()
        print("shutting down: draining queries in flight", flush=True)
        await app[SERVICE].drain(drain_timeout_s)
    finally:
        await runner.cleanup()


def parse_faults(items: list[str], n: int) -> dict[int, str]:
    faults: dict[int, str] = {}
    for item in items:
        index, sep, spec = item.partition("=")
        if not sep or not index.isdigit() or not 0 <= int(index) < n:
            raise ConfigError(f"--fault {item!r} is not INDEX=SPEC with INDEX in 0..{n - 1}")
        faults[int(index)] = spec
    return faults


def run_up(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_up(args))
    except ConfigError as exc:
        raise SystemExit(f"parm up: {exc}") from None


async def _up(args: argparse.Namespace) -> int:
    if args.r < 1:  # checked here too: the number of workers to start depends on it
        raise ConfigError(f"r must be >= 1, got {args.r}")
    n_extra = max(args.r, args.r * args.workers // args.k) if args.mode != "none" else 0
    # parity worker i runs parity model i mod r, and there are at least r of them: one per index
    extra_models = (parity_models(args.model, args.parity_model, args.k, args.r, args.code)
                    if args.mode == "coded" else [args.model])
    faults = parse_faults(args.fault, args.workers)
    specs = cluster_specs(args.workers, n_extra, args.mode, args.model, extra_models,
                          max_batch=args.max_batch, device=args.device)
    for index, spec in faults.items():
        specs[index].fault = spec
    # every local cluster authenticates its workers, with the given secret or a fresh one
    secret = _worker_secret(args) or new_secret()
    cluster = LocalCluster(specs, host="127.0.0.1", secret=secret)
    await cluster.start()
    try:
        cfg = config_from_args(args, cluster.addresses("data"), cluster.addresses("parity"), worker_secret=secret)
        banner = (f"parm up: frontend on http://{cfg.host}:{cfg.port} ({cfg.mode}, k={cfg.k}, r={cfg.r}); "
                  f"data workers {_fmt(cluster.addresses('data'))}; "
                  f"{'parity' if cfg.mode == 'coded' else 'extra'} workers {_fmt(cluster.addresses('parity'))}")
        await serve_until_signal(create_app(cfg, args.drain_timeout_s), cfg, args.drain_timeout_s, banner)
    finally:
        await cluster.stop()
    return 0


def _fmt(addresses: Any) -> str:
    return ",".join(f"{h}:{p}" for h, p in addresses) or "-"


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_fault(args: argparse.Namespace) -> int:
    from frontend.worker_client import WorkerClient

    async def send() -> None:
        host, port = parse_address(args.address)
        client = WorkerClient(host, port, "control", secret=_worker_secret(args))
        client.start()
        try:
            if not await client.wait_connected(5.0):
                raise SystemExit(f"parm fault: cannot connect to {args.address}")
            await client.set_fault(args.spec)
        finally:
            with contextlib.suppress(Exception):
                await client.close()
    asyncio.run(send())
    print(f"{args.address}: fault set to {args.spec!r}")
    return 0
