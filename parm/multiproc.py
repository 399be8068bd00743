"""``parm serve --processes N``: N frontend processes on one port. Each binds it with SO_REUSEPORT
(the kernel spreads new connections across them), groups its own queries over its own worker
connections, and answers /ready, /stats and /metrics for all of them (frontend.peers). This parent
reserves the port, starts the processes, restarts one that dies, and on SIGTERM drains them all.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from frontend.errors import ConfigError
from workers.cluster import die_with_parent

POLL_S = 0.1
START_TIMEOUT_S = 60.0
QUICK_DEATH_S = 10.0     # a process that dies this soon after starting counts towards giving up
MAX_QUICK_DEATHS = 3     # in a row: then the configuration, not bad luck, is at fault
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT but not listening: it holds the port (and picks
    one for ``port`` 0) for the processes to bind beside it, and receives no connections itself."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


class Supervisor:
    """The N serving processes: each is this same ``parm serve`` command line, told its index."""

    def __init__(self, argv: list[str], count: int, port: int, run_dir: Path, predict_port: int | None = None) -> None:
        self.argv, self.count, self.port, self.run_dir = argv, count, port, run_dir
        self.predict_port = predict_port  # the lean listener's port, shared the same way
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started: list[float] = []
        self.quick_deaths = 0

    def command(self, index: int) -> list[str]:
        lean = ["--predict-port", str(self.predict_port)] if self.predict_port is not None else []
        return [sys.executable, "-m", "parm", *self.argv, "--port", str(self.port), *lean,
                "--process-index", str(index), "--peers-dir", str(self.run_dir), "--supervisor-pid", str(os.getpid())]

    def start(self, index: int) -> subprocess.Popen[bytes]:
        (self.run_dir / f"{index}.sock").unlink(missing_ok=True)  # peers see "not running" until it listens
        # its own session: a terminal's Ctrl-C reaches the parent only, which stops each process once;
        # SIGTERM (a drain) if the parent dies, and the process also checks (--supervisor-pid)
        proc = subprocess.Popen(self.command(index), start_new_session=True, preexec_fn=die_with_parent)
        if index < len(self.procs):
            self.procs[index], self.started[index] = proc, time.monotonic()
        else:
            self.procs.append(proc)
            self.started.append(time.monotonic())
        return proc

    def wait_listening(self, stopping: list[bool]) -> None:
        """Until every process listens (its unix socket exists); ConfigError if one exits first."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all((self.run_dir / f"{i}.sock").exists() for i in range(self.count)):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    raise ConfigError(f"serving process {i} exited with status {proc.returncode} while starting")
            if stopping[0] or time.monotonic() > deadline:
                raise ConfigError("stopped before every serving process listened" if stopping[0]
                                  else f"serving processes not listening after {START_TIMEOUT_S:g} s")
            time.sleep(POLL_S)

    def replace_dead(self) -> None:
        """Restart any process that exited; ConfigError after MAX_QUICK_DEATHS quick deaths in a row."""
        for i, proc in enumerate(self.procs):
            if proc.poll() is None:
                continue
            lived = time.monotonic() - self.started[i]
            self.quick_deaths = self.quick_deaths + 1 if lived < QUICK_DEATH_S else 0
            if self.quick_deaths >= MAX_QUICK_DEATHS:
                raise ConfigError(f"serving process {i} exited with status {proc.returncode} "
                                  f"{self.quick_deaths} times in a row soon after starting")
            print(f"parm serve: process {i} exited with status {proc.returncode} after {lived:.0f} s; restarting",
                  file=sys.stderr, flush=True)
            self.start(i)

    def stop(self, drain_timeout_s: float) -> None:
        """SIGTERM to each (each drains its queries in flight), then wait; SIGKILL what outlives the drain."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + drain_timeout_s + 10.0
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def supervise(args: argparse.Namespace, banner: str) -> int:
    """Run ``args.processes`` serving processes until SIGINT/SIGTERM; ``banner`` has {port} to fill."""
    held = reserve_port(args.host, args.port)
    try:
        held_lean = reserve_port(args.host, args.predict_port) if args.predict_port is not None else None
    except ConfigError:
        held.close()
        raise
    stopping = [False]

    def on_signal(signum: int, frame: object) -> None:
        stopping[0] = True

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        with tempfile.TemporaryDirectory(prefix="parm-serve-") as run_dir:
            lean_port = int(held_lean.getsockname()[1]) if held_lean is not None else None
            sup = Supervisor(args.argv, args.processes, int(held.getsockname()[1]), Path(run_dir), lean_port)
            try:
                for i in range(args.processes):
                    sup.start(i)
                sup.wait_listening(stopping)
                print(banner.format(port=sup.port), flush=True)
                if lean_port is not None:
                    print(f"POST /predict also on http://{args.host}:{lean_port}/predict (lean listener, "
                          f"{args.processes} processes)", flush=True)
                while not stopping[0]:
                    sup.replace_dead()
                    time.sleep(POLL_S)
                print("shutting down: draining queries in flight", flush=True)
            finally:
                sup.stop(args.drain_timeout_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        held.close()
        if held_lean is not None:
            held_lean.close()
    return 0
