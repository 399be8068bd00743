"""``parm fault ADDRESS SPEC``: change a running worker's fault injection (one request on one
short connection). The workers' secret is taken from ``--worker-secret-file``, ``$PARM_WORKER_SECRET``,
``--cluster STATE_FILE``, or else the state file of the running ``parm up`` cluster that lists the
address (parm.cluster_state). Any failure is one line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from frontend.config import parse_address
from frontend.errors import ConfigError
from parm import cluster_state
from workers import auth
from workers.faults import parse as parse_fault
from workers.protocol import FrameDecoder, ProtocolError, pack

ROLE_INDEX = re.compile(r"^(data|parity):(\d+)$")  # a worker of a parm up cluster by position
TIMEOUT_S = 5.0


class FaultCommandError(Exception):
    """Why the fault could not be set, as the one line the user sees."""


@dataclass
class Target:
    host: str
    port: int
    secret: str | None
    label: str  # how the result line names the worker


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("fault", help="set a running worker's fault injection",
                              description="Set a running worker's fault injection; `none` heals it. On a parm up "
                                          "cluster the secret is found in its state file.")
    p.add_argument("address", help="worker HOST:PORT, or data:I / parity:I for worker I of a parm up cluster")
    p.add_argument("spec", help="fault spec, e.g. stall, none, delay:ms=50, error:p=0.5 (combine with +)")
    p.add_argument("--cluster", default=None, metavar="STATE_FILE",
                   help="the state file parm up printed (default: the running parm up cluster listing the worker, "
                        f"found in ${cluster_state.STATE_DIR_ENV}, $XDG_RUNTIME_DIR/parm or <tmp>/parm-<uid>)")
    p.add_argument("--worker-secret-file", default=None,
                   help="the workers' shared secret (or $PARM_WORKER_SECRET), for workers not started by parm up")
    p.set_defaults(func=run_fault)


def run_fault(args: argparse.Namespace) -> int:
    try:
        parse_fault(args.spec)  # a typo is refused here, before anything is sent
    except ValueError as exc:
        print(f"parm fault: {exc}", file=sys.stderr)
        return 2
    try:
        target = resolve_target(args.address, args.cluster, args.worker_secret_file)
        spec = asyncio.run(set_fault(target, args.spec))
    except FaultCommandError as exc:
        print(f"parm fault: {exc}", file=sys.stderr)
        return 1
    print(f"{target.label}: fault set to {spec!r}")
    return 0


def resolve_target(address: str, cluster_file: str | None, secret_file: str | None) -> Target:
    """Where the worker is and the secret to prove to it (None: the worker has none, we hope)."""
    try:
        explicit = auth.read_secret(secret_file)
    except auth.AuthError as exc:
        raise FaultCommandError(str(exc)) from None
    found = _from_state(address, cluster_file)
    if found is None:
        if ROLE_INDEX.match(address):
            raise FaultCommandError(f"no running parm up cluster has a worker {address} (pass --cluster STATE_FILE "
                                    f"or the worker's HOST:PORT)")
        host, port = _address(address)
        return Target(host, port, explicit, address)
    entry, state = found
    host, port = _address(entry.address)
    label = entry.address if entry.address == address else f"{address} ({entry.address})"
    return Target(host, port, explicit or state.secret, label)


def _from_state(address: str, cluster_file: str | None) -> tuple[cluster_state.WorkerEntry,
                                                                 cluster_state.ClusterState] | None:
    if cluster_file is not None:
        try:
            state = cluster_state.load(cluster_file)
        except cluster_state.StateError as exc:
            raise FaultCommandError(str(exc)) from None
        entry = state.find(address)
        if entry is None:
            raise FaultCommandError(f"{cluster_file} lists no worker {address}; its workers: "
                                    + ", ".join(f"{w.role}:{w.index}={w.address}" for w in state.workers))
        return entry, state
    states = [(entry, state) for _, state in cluster_state.live_states() if (entry := state.find(address))]
    if ROLE_INDEX.match(address) and len(states) > 1:
        raise FaultCommandError(f"{len(states)} running parm up clusters have a worker {address}; "
                                f"pass --cluster STATE_FILE or the worker's HOST:PORT")
    return states[0] if states else None


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ConfigError as exc:
        raise FaultCommandError(f"{exc} (nor data:I / parity:I)") from None


async def set_fault(target: Target, spec: str, timeout_s: float = TIMEOUT_S) -> str:
    """Send one fault request; returns the spec the worker now runs. FaultCommandError otherwise."""
    name = f"{target.host}:{target.port}"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(target.host, target.port), timeout_s)
    except (OSError, asyncio.TimeoutError) as exc:
        raise FaultCommandError(f"cannot reach worker {name}: {_reason(exc)} (is it running?)") from None
    try:
        return await asyncio.wait_for(_exchange(reader, writer, target, spec, name), timeout_s)
    except asyncio.TimeoutError:
        raise FaultCommandError(f"worker {name} did not answer within {timeout_s:g} s") from None
    except (OSError, ProtocolError) as exc:
        raise FaultCommandError(f"worker {name} closed the connection ({exc})") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _reason(exc: BaseException) -> str:
    """asyncio's own message names every address tried; the errno's text says what went wrong."""
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    if isinstance(exc, OSError) and exc.strerror:  # e.g. a host name that does not resolve
        return exc.strerror.lower()
    return "no answer" if isinstance(exc, asyncio.TimeoutError) else str(exc)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target, spec: str,
                    name: str) -> str:
    decoder = FrameDecoder()
    early: list[dict[str, Any]] = []
    if target.secret is not None:
        try:
            early = await auth.answer(auth.stream_recv(reader), writer.write, decoder, target.secret, TIMEOUT_S)
        except auth.AuthError as exc:
            raise FaultCommandError(f"worker {name}: {exc}") from None
    writer.write(pack({"type": "fault", "id": 1, "spec": spec}))
    await writer.drain()
    reply = await _reply(reader, decoder, early)
    if reply.get("type") == "hello":  # a worker with a secret greets first; we had none to answer with
        raise FaultCommandError(f"worker {name} requires its cluster's secret, and no running parm up cluster "
                                f"lists it: pass --cluster STATE_FILE or --worker-secret-file FILE")
    if reply.get("type") == "error":
        raise FaultCommandError(f"worker {name} refused the fault: {reply.get('message')}")
    return str(reply.get("fault", spec))


async def _reply(reader: asyncio.StreamReader, decoder: FrameDecoder, early: list[dict[str, Any]]) -> dict[str, Any]:
    if early:  # frames that came right behind the handshake's acceptance
        return early[0]
    while data := await reader.read(64 * 1024):
        frames = decoder.feed(data)
        if frames:
            return frames[0]
    raise OSError("no reply")
