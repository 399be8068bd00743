"""The ``parm worker`` subcommand: load one model and serve it until SIGTERM/SIGINT.

Data flow: frontend -> worker_client -> [wire] -> workers.server (started here) -> model.
torch is imported inside ``run_worker`` so ``parm --help`` stays fast.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from workers.event_loop import EVENT_LOOPS, loop_factory
from workers.protocol import DEFAULT_MAX_FRAME

MIN_FRAME = 1024  # below this even a ping reply would not fit


def _int_at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {value}")
    return value


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint path or builtin:NAME[:key=val,...] "
                        "(builtin:linear[:seed=,parity_k=,sleep_ms=,jitter_ms=], builtin:sleep[:ms=,jitter_ms=])")
    parser.add_argument("--port", type=_port, required=True, help="TCP port (0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the model runs")
    parser.add_argument("--max-batch", type=_int_at_least(1), default=32, help="requests per batch")
    parser.add_argument("--fault", default="none", help="fault injection spec, e.g. delay:ms=20+error:p=0.1")
    parser.add_argument("--max-frame", type=_int_at_least(MIN_FRAME), default=DEFAULT_MAX_FRAME,
                        help="largest accepted frame in bytes")
    parser.add_argument("--service-time", default=None, metavar="DIST",
                        help="calibrated per-batch service time for any model: fixed:ms=F | exp:mean_ms=F | "
                        "lognormal:median_ms=F,sigma=S | file:PATH.json (list of ms). Outputs stay the real "
                        "model's; after real inference the worker sleeps the rest of the drawn time")
    parser.add_argument("--secret-file", default=None,
                        help="require the shared-secret handshake on every connection (secret read from this file; "
                             "or set PARM_WORKER_SECRET)")
    parser.add_argument("--metrics-port", type=_port, default=None,
                        help="serve Prometheus metrics over HTTP on this port (same --host)")
    parser.add_argument("--threads", type=_int_at_least(0), default=0,
                        help="torch intra-op threads (0 = torch default); 1 suits many workers per host")
    parser.add_argument("--event-loop", default="auto", choices=list(EVENT_LOOPS),
                        help="the worker's event loop: uvloop (libuv: less CPU per request), asyncio, or auto "
                             "(uvloop when installed)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("worker", help="serve one model (base or parity) over TCP",
                                   description="Serve one model over the parm wire protocol.")
    add_worker_arguments(parser)
    parser.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    """Load the model, then serve; returns the process exit status."""
    import asyncio
    import os

    if args.threads:  # before torch loads OpenMP: its default reaches every thread, not only this one. With
        # set_num_threads alone the inference thread ran 2 OpenMP threads that spun through each
        # --service-time sleep (10 ms of CPU per 40 ms request for an MLP instead of 1.6 ms)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch

    from workers.auth import AuthError, read_secret
    from workers.faults import parse
    from workers.model import load_model, parse_service_time
    from workers.server import serve_forever

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        parse(args.fault)  # fail before the slow model load
        batch_time = parse_service_time(args.service_time) if args.service_time else None
        model = load_model(args.model, args.device)
        if batch_time is not None:  # replaces a builtin's own sleep_ms/jitter_ms
            model.batch_time = batch_time
            model.info["service_time"] = args.service_time
    except ValueError as exc:  # CheckpointError is a ValueError
        print(f"parm worker: {exc}", file=sys.stderr)
        return 2
    try:
        secret = read_secret(args.secret_file)
    except AuthError as exc:
        print(f"parm worker: {exc}", file=sys.stderr)
        return 2
    try:
        factory = loop_factory(args.event_loop)
    except ValueError as exc:
        print(f"parm worker: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(serve_forever(model, args.host, args.port, args.max_batch, args.fault, args.max_frame,
                                            secret=secret, metrics_port=args.metrics_port))
    except OSError as exc:  # e.g. the port is taken
        print(f"parm worker: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1


def main_worker(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (``python -m workers.server``), same flags as ``parm worker``."""
    parser = argparse.ArgumentParser(prog="parm worker", description="Serve one model over TCP.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log threshold")
    add_worker_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_worker(args)


if __name__ == "__main__":
    sys.exit(main_worker())
