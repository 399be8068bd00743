"""``parm serve`` (the frontend against running workers) and what ``parm up`` (parm.up_command)
shares with it: the frontend's flags, flags -> FrontendConfig, serving until SIGTERM with a drain."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from frontend.app import create_app
from frontend.config import MODES, FrontendConfig, parse_addresses
from frontend.decode_policy import POLICIES
from frontend.errors import ConfigError
from frontend.gc_watch import freeze_startup_heap
from frontend.handlers import SERVICE
from frontend.peers import Peers
from frontend.predict_listener import PredictListener
from workers import event_loop
from workers.auth import AuthError, read_secret

T = TypeVar("T")
EVENT_LOOPS = event_loop.EVENT_LOOPS
log = logging.getLogger(__name__)
PARENT_POLL_S = 0.5  # one of several serving processes checks this often that its supervisor lives
CODE_HELP = "erasure code: concat (images) or sum (learned parity models), berrut (training-free: parity workers " \
            "run the base model)"


def add_frontend_arguments(p: argparse.ArgumentParser, code: str = "concat", code_help: str = CODE_HELP) -> None:
    p.add_argument("--host", default="127.0.0.1", help="interface to bind")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (0: any free port, printed once listening)")
    p.add_argument("--predict-port", type=int, default=None,
                   help="also serve POST /predict alone on this port through a lean HTTP listener (httptools): "
                        "less CPU and latency per query than --port, which keeps every route")
    p.add_argument("--model-name", default="parm", help="the model's name on the V2 API (/v2/models/NAME)")
    p.add_argument("--model-id", default=None,
                   help="serve only data workers reporting this model_id (and parity models trained for it); "
                        "unset: the model most connected data workers serve")
    p.add_argument("--k", type=int, default=2, help="queries per coding group")
    p.add_argument("--r", type=int, default=1,
                   help="parity queries per group: up to r stragglers per group are decoded (every code; sum and "
                        "concat need r learned parity models, one per parity index)")
    p.add_argument("--code", default=code, help=code_help)
    p.add_argument("--mode", default="coded", choices=list(MODES),
                   help="coded: parity workers; equal: extra replicas; hedged: extra replicas + hedged requests")
    p.add_argument("--hedge-delay-ms", type=float, default=None,
                   help="hedged mode: re-send after this long (default: the --hedge-percentile of recent latencies)")
    p.add_argument("--hedge-percentile", type=float, default=95.0,
                   help="hedged mode without --hedge-delay-ms: re-send after this percentile of recent latencies")
    p.add_argument("--deadline-ms", type=float, default=1000.0, help="per-request deadline when a request sets none")
    p.add_argument("--max-deadline-ms", type=float, default=60_000.0,
                   help="the longest deadline a request may set (a longer one is a 400)")
    p.add_argument("--group-timeout-ms", type=float, default=20.0,
                   help="close a group with fewer than k queries after this long (served uncoded)")
    p.add_argument("--decode-policy", default=None, choices=list(POLICIES),
                   help="when to decode a group that could: adaptive (once the missing output is overdue for its "
                        "worker), eager (at once, ParM), grace (after --decode-grace-ms); unset: grace if "
                        "--decode-grace-ms > 0, else adaptive")
    p.add_argument("--decode-grace-ms", type=float, default=0.0,
                   help="grace policy: wait this long for a straggler's real output (never past the deadline)")
    p.add_argument("--decode-quantile", type=float, default=95.0,
                   help="adaptive policy: an output is overdue past --decode-slack x this percentile of its "
                        "worker's latency")
    p.add_argument("--decode-slack", type=float, default=1.25, help="adaptive policy: see --decode-quantile")
    p.add_argument("--no-hedge-fallback", dest="hedge_fallback", action="store_false",
                   help="coded mode: do not re-send an overdue query its group cannot decode to a spare worker")
    p.add_argument("--default-output", default=None,
                   help="comma-separated output given (flagged default) at the deadline instead of a 504")
    p.add_argument("--max-pending", type=int, default=4096, help="admission limit; beyond it 503 + Retry-After")
    p.add_argument("--max-queries-per-request", type=int, default=1024, help="queries one request may batch")
    p.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024, help="request body limit; beyond it 413")
    p.add_argument("--health-interval-s", type=float, default=1.0, help="seconds between worker health probes")
    p.add_argument("--health-timeout-s", type=float, default=1.0,
                   help="a worker that does not answer a health probe in this long is taken out of rotation")
    p.add_argument("--connect-timeout-s", type=float, default=2.0, help="timeout of one connection attempt to a worker")
    p.add_argument("--retry-backoff-s", type=float, default=0.005,
                   help="re-send a query a worker failed after this x 2^attempt")
    p.add_argument("--auth-token-file", default=None,
                   help="require 'Authorization: Bearer TOKEN' on the API (TOKEN read from this file; "
                        "or set PARM_AUTH_TOKEN); the probes /health, /ready, /metrics stay open")
    p.add_argument("--worker-secret-file", default=None,
                   help="shared secret for the workers' handshake (or $PARM_WORKER_SECRET); parm up makes one")
    p.add_argument("--drain-timeout-s", type=float, default=5.0,
                   help="on SIGTERM, wait this long for in-flight queries")
    p.add_argument("--trace-file", default=None, metavar="PATH",
                   help="record each coding group's events (requests, outputs, decodes, answers) and write them "
                        "to PATH as JSON lines at shutdown, to explain slow answers (with --processes: PATH.INDEX)")
    p.add_argument("--event-loop", default="auto", choices=list(EVENT_LOOPS),
                   help="the frontend's event loop: uvloop (libuv: less CPU per query), asyncio, or auto "
                        "(uvloop when installed)")


def config_from_args(args: argparse.Namespace, data: Any, parity: Any, worker_secret: str | None = None,
                     code: str | None = None) -> FrontendConfig:
    """The frontend's settings from its flags; ``code`` replaces ``args.code`` (parm up's resolved auto)."""
    default = _default_output(args.default_output)
    return FrontendConfig(data=data, parity=parity, model_name=args.model_name, k=args.k, r=args.r,
                          code=code or args.code, mode=args.mode, model_id=args.model_id, host=args.host,
                          port=args.port, predict_port=args.predict_port, deadline_ms=args.deadline_ms, max_deadline_ms=args.max_deadline_ms,
                          group_timeout_ms=args.group_timeout_ms,
                          decode_policy=args.decode_policy, decode_grace_ms=args.decode_grace_ms,
                          decode_quantile=args.decode_quantile, decode_slack=args.decode_slack,
                          hedge_fallback=args.hedge_fallback, hedge_delay_ms=args.hedge_delay_ms,
                          hedge_percentile=args.hedge_percentile, default_output=default,
                          max_pending=args.max_pending, max_queries_per_request=args.max_queries_per_request,
                          max_body_bytes=args.max_body_bytes, health_interval_s=args.health_interval_s,
                          health_timeout_s=args.health_timeout_s, connect_timeout_s=args.connect_timeout_s,
                          retry_backoff_s=args.retry_backoff_s, auth_token=read_token(args.auth_token_file),
                          trace_file=args.trace_file,
                          worker_secret=worker_secret if worker_secret is not None else read_worker_secret(args))


def _default_output(text: str | None) -> tuple[float, ...] | None:
    """``--default-output 0,0,1`` -> (0.0, 0.0, 1.0); ConfigError for anything that is not numbers."""
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--default-output {text!r} is not comma-separated numbers") from None


def read_worker_secret(args: argparse.Namespace) -> str | None:
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
    serve.add_argument("--processes", type=int, default=1,
                       help="frontend processes sharing the port (SO_REUSEPORT); each groups its own queries")
    serve.add_argument("--process-index", type=int, default=None, help=argparse.SUPPRESS)  # set by parm.multiproc
    serve.add_argument("--peers-dir", default=None, help=argparse.SUPPRESS)
    serve.add_argument("--supervisor-pid", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        if args.processes < 1:
            raise ConfigError(f"--processes must be at least 1, got {args.processes}")
        cfg = config_from_args(args, parse_addresses(args.data), parse_addresses(args.parity))
        banner = f"parm serve: frontend on http://{cfg.host}:{{port}} ({cfg.mode}, k={cfg.k}"
        if args.processes > 1 and args.process_index is None:
            from parm.multiproc import supervise
            return supervise(args, banner + f", {args.processes} processes)")
        peers = None
        if args.process_index is not None:  # one of several serving processes on the port
            peers = Peers(Path(args.peers_dir), args.process_index, args.processes)
            if cfg.trace_file is not None:  # one file per process: they would overwrite each other
                cfg = dataclasses.replace(cfg, trace_file=f"{cfg.trace_file}.{args.process_index}")
            banner = f"parm serve: process {args.process_index} of {args.processes} listening on port {{port}}"
        else:
            banner += ")"
        app = create_app(cfg, args.drain_timeout_s, peers)
        run_on_loop(serve_until_signal(app, cfg, args.drain_timeout_s, lambda port: banner.format(port=port), peers,
                                       args.supervisor_pid), args.event_loop)
    except ConfigError as exc:
        raise SystemExit(f"parm serve: {exc}") from None
    return 0


def run_on_loop(main: Coroutine[Any, Any, T], kind: str = "auto") -> T:
    """asyncio.run on the chosen event loop (``--event-loop``)."""
    try:
        factory = loop_factory(kind)
    except ConfigError:
        main.close()  # never started: no "coroutine was never awaited"
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """None: asyncio's own loop (workers.event_loop)."""
    try:
        return event_loop.loop_factory(kind)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


async def serve_until_signal(app: web.Application, cfg: FrontendConfig, drain_timeout_s: float,
                             banner: Callable[[int], str], peers: Peers | None = None,
                             supervisor: int | None = None) -> None:
    """Serve until SIGINT/SIGTERM; then keep listening while answering 503 to new requests, drain
    the queries in flight (up to ``drain_timeout_s``), and only then close (uvicorn's order).
    ``banner(port)`` is printed once listening: with ``--port 0`` only then is the port known.
    One of several processes (``peers``) shares the port and also listens on its unix socket;
    it stops too when its parent (``supervisor``) is gone."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    log.info("garbage collector: %d start-up objects frozen", freeze_startup_heap())
    lean = PredictListener(app[SERVICE]) if cfg.predict_port is not None else None
    try:
        await _listen(runner, cfg.host, cfg.port, reuse_port=peers is not None)
        lean_port = None if lean is None else await _listen_lean(lean, cfg.host, cfg.predict_port or 0, peers is not None)
        if peers is not None:  # last: the supervisor counts a process as listening once this exists
            await web.UnixSite(runner, str(peers.socket_path(peers.index))).start()
        print(banner(int(runner.addresses[0][1])), flush=True)
        if lean_port is not None:
            print(f"POST /predict also on http://{cfg.host}:{lean_port}/predict (lean listener)", flush=True)
        await _wait_for_signal(supervisor)
        print("shutting down: draining queries in flight", flush=True)
        await app[SERVICE].drain(drain_timeout_s)
    finally:
        if lean is not None:
            lean.stop_accepting()
        await runner.cleanup()  # stops the service: what it still holds is answered 503, on both ports
        if lean is not None:
            await lean.close()


async def _listen(runner: web.AppRunner, host: str, port: int, reuse_port: bool = False) -> None:
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
    except OSError as exc:
        raise _cannot_listen(host, port, exc, "--port") from None


async def _listen_lean(lean: PredictListener, host: str, port: int, reuse_port: bool) -> int:
    try:
        return await lean.start(host, port, reuse_port)
    except OSError as exc:
        raise _cannot_listen(host, port, exc, "--predict-port") from None


def _cannot_listen(host: str, port: int, exc: OSError, flag: str) -> ConfigError:
    hint = f" ({flag} 0 picks a free one)" if exc.errno == errno.EADDRINUSE else ""
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)  # asyncio's text repeats the address
    return ConfigError(f"cannot listen on {host}:{port}: {reason}{hint}")


async def _wait_for_signal(parent: int | None = None) -> None:
    """Until SIGINT/SIGTERM, or until the process ``parent`` is gone (this process is then re-parented)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_parent(parent, stop)) if parent is not None else None
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:  # also false at once if the parent died while this process started
        await asyncio.sleep(PARENT_POLL_S)
    stop.set()
