"""A benchmark deployment on loopback: worker processes that can be killed and restarted on the
same port, and the frontend as its own ``parm serve`` process. Used by harness/bench.py.

Every child asks to die with its parent (PR_SET_PDEATHSIG), and ``stop`` always SIGTERMs then
SIGKILLs, so a benchmark leaves no orphan processes whatever happens to it.
"""
from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass

import aiohttp

from workers.cluster import LocalCluster, WorkerProcess, WorkerSpec, die_with_parent


@dataclass
class BenchWorkerSpec(WorkerSpec):
    service_time: str | None = None   # parm worker --service-time
    port: int = 0                      # 0 at first start; the old port on restart


class BenchCluster(LocalCluster):
    """LocalCluster whose workers get ``--service-time`` and can be restarted on their old port,
    so the frontend's reconnect loop finds them again at the same address."""

    async def _spawn(self, spec: WorkerSpec) -> WorkerProcess:
        cmd = [sys.executable, "-m", "workers.cli", "--log-level", "WARNING", "--model", spec.model,
               "--port", str(getattr(spec, "port", 0)), "--host", self.host, "--fault", spec.fault,
               "--max-batch", str(spec.max_batch), "--device", spec.device, "--threads", str(spec.threads)]
        if getattr(spec, "service_time", None):
            cmd += ["--service-time", spec.service_time]  # type: ignore[attr-defined]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    preexec_fn=die_with_parent)
        return WorkerProcess(spec, proc)

    async def restart(self, index: int, fault: str = "none", timeout_s: float = 30.0) -> None:
        """Start worker ``index`` again on its old port with ``fault`` as its initial spec."""
        old = self.workers[index]
        await self.kill(index)
        spec = BenchWorkerSpec(**{**vars(old.spec), "port": old.port, "fault": fault})
        fresh = await self._spawn(spec)
        self.workers[index] = fresh
        await asyncio.wait_for(self._await_ready(fresh), timeout_s)

    async def stop(self, grace_s: float = 2.0) -> None:
        """SIGTERM every worker, SIGKILL what is left after ``grace_s`` (a benchmark worker holds
        nothing to flush, and a torch interpreter can take seconds to exit on a loaded machine)."""
        live = [w for w in self.workers if w.proc.returncode is None]
        for w in live:
            with contextlib.suppress(ProcessLookupError):
                w.proc.terminate()
        waits = [asyncio.ensure_future(w.proc.wait()) for w in live]
        if waits:
            await asyncio.wait(waits, timeout=grace_s)
        for w in live:
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
        await asyncio.gather(*waits)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc.returncode is None]


class FrontendProcess:
    """``python -m parm.cli serve ...`` as a child process; ``start`` returns once /ready is 200."""

    def __init__(self, args: list[str], port: int) -> None:
        self.args, self.port = args, port
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout_s: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "parm.cli", "--log-level", "WARNING", "serve", "--port", str(self.port),
               *self.args]
        self.proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                         preexec_fn=die_with_parent)
        await self._wait_ready(timeout_s)

    async def _wait_ready(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < end:
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError(f"frontend exited with status {self.proc.returncode} before it was ready")
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with session.get(self.url + "/ready", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200 and (await resp.json()).get("ready"):
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"frontend at {self.url} not ready within {timeout_s:g} s")

    async def get_json(self, path: str) -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return await resp.json()

    async def stop(self, grace_s: float = 5.0) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
