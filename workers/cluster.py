"""A local cluster on loopback: worker processes started, watched and stopped by one parent.

Used by ``parm up``, the demo, the benchmarks and the end-to-end tests. Each worker is a real
``python -m workers.cli`` process (``parm worker``'s flags) on a free port; its port is read from
the readiness line it prints.
Workers are asked to die with the parent (Linux PR_SET_PDEATHSIG), so no orphan survives even a
SIGKILL of the parent; ``stop`` sends SIGTERM, then SIGKILL after a grace period.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from workers.auth import ENV

log = logging.getLogger(__name__)
READY_LINE = re.compile(rb"parm worker listening on (\S+):(\d+)")
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A loopback TCP port that is free now (nothing stops another process taking it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WorkerSpec:
    role: str                  # "data" or "parity"
    model: str                 # checkpoint path or builtin:NAME[...]
    fault: str = "none"
    max_batch: int = 32
    device: str = "cpu"
    threads: int = 1           # many workers share few cores: one intra-op thread each


@dataclass
class WorkerProcess:
    spec: WorkerSpec
    proc: asyncio.subprocess.Process
    host: str = "127.0.0.1"
    port: int = 0
    log_lines: list[str] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


class LocalCluster:
    def __init__(self, specs: list[WorkerSpec], host: str = "127.0.0.1", secret: str | None = None) -> None:
        self.specs = specs
        self.host = host
        self.secret = secret  # handed to workers in their environment, never on a command line
        self.workers: list[WorkerProcess] = []

    def addresses(self, role: str) -> tuple[tuple[str, int], ...]:
        return tuple(w.address for w in self.workers if w.spec.role == role)

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start every worker and wait until each has printed its readiness line."""
        try:
            self.workers = [await self._spawn(s) for s in self.specs]
            await asyncio.wait_for(asyncio.gather(*(self._await_ready(w) for w in self.workers)), timeout_s)
        except BaseException:
            await self.stop()
            raise

    async def _spawn(self, spec: WorkerSpec) -> WorkerProcess:
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())  # workers log like their parent
        level = level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO"
        cmd = [sys.executable, "-m", "workers.cli", "--log-level", level, "--model", spec.model, "--port", "0",
               "--host", self.host, "--fault", spec.fault, "--max-batch", str(spec.max_batch),
               "--device", spec.device, "--threads", str(spec.threads)]
        env = {**os.environ, ENV: self.secret} if self.secret else None
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, env=env,
                                                    preexec_fn=die_with_parent)
        return WorkerProcess(spec, proc)

    async def _await_ready(self, w: WorkerProcess) -> None:
        assert w.proc.stdout is not None
        while line := await w.proc.stdout.readline():
            match = READY_LINE.search(line)
            if match:
                w.host, w.port = match.group(1).decode(), int(match.group(2))
                return
        code = await w.proc.wait()
        raise RuntimeError(f"{w.spec.role} worker ({w.spec.model}) exited with status {code} before it was ready")

    async def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to worker ``index`` (fault injection: a crash) and reap it."""
        w = self.workers[index]
        if w.proc.returncode is None:
            w.proc.send_signal(sig)
            await w.proc.wait()

    async def stop(self, grace_s: float = 5.0) -> None:
        live = [w for w in self.workers if w.proc.returncode is None]
        for w in live:
            with contextlib.suppress(ProcessLookupError):
                w.proc.terminate()
        for w in live:
            try:
                await asyncio.wait_for(w.proc.wait(), grace_s)
            except asyncio.TimeoutError:
                log.warning("worker pid %d ignored SIGTERM; killing it", w.proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()


def cluster_specs(n_data: int, n_extra: int, mode: str, data_model: str, parity_model: str | Sequence[str],
                  **opts: object) -> list[WorkerSpec]:
    """N data workers plus N/k parity workers (coded) or N/k extra replicas (equal, hedged).
    ``parity_model``: one model, or one per parity index l (parity worker i runs model i mod r)."""
    specs = [WorkerSpec("data", data_model, **opts) for _ in range(n_data)]  # type: ignore[arg-type]
    if mode == "coded":
        models = [parity_model] if isinstance(parity_model, str) else list(parity_model)
        specs += [WorkerSpec("parity", models[i % len(models)], **opts)  # type: ignore[arg-type]
                  for i in range(n_extra)]
    elif mode in ("equal", "hedged"):
        specs += [WorkerSpec("parity", data_model, **opts) for _ in range(n_extra)]  # type: ignore[arg-type]
    return specs
