"""Across hosts: each worker in its own network namespace, joined to the frontend's by a veth pair
(iproute2). Under load, one data worker's link is cut (`ip link set ... down`) and restored:
no query is lost, the cut worker's queries come back degraded, and it serves again afterwards.
Skipped, with the reason, where namespaces cannot be created (needs root and iproute2)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from frontend.config import FrontendConfig
from tests.conftest import eventually, frontend, service_of

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PORT = 9000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _namespaces_available() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"parm-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create network namespaces here: {exc}"
    return None


@contextlib.contextmanager
def hosts(n: int) -> Iterator[list[tuple[str, str]]]:
    """n namespaces, each a 'host' at 10.231.X.2 reachable from here via veth (root side 10.231.X.1).
    Yields (namespace, root-side link) per host; tears everything down afterwards."""
    tag = os.getpid() % 10_000
    made: list[tuple[str, str]] = []
    try:
        for i in range(n):
            ns, near, far = f"parm-{tag}-{i}", f"pr{tag}x{i}", f"pw{tag}x{i}"
            net = f"10.231.{(tag % 60) * 4 + i}"
            _ip("netns", "add", ns)
            made.append((ns, near))
            _ip("link", "add", near, "type", "veth", "peer", "name", far)
            _ip("link", "set", far, "netns", ns)
            _ip("addr", "add", f"{net}.1/30", "dev", near)
            _ip("link", "set", near, "up")
            _ip("-n", ns, "addr", "add", f"{net}.2/30", "dev", far)
            _ip("-n", ns, "link", "set", far, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield made
    finally:
        for ns, near in made:
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                _ip("link", "del", near)
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                _ip("netns", "del", ns)


def address(ns_index: int) -> str:
    return f"10.231.{(os.getpid() % 10_000 % 60) * 4 + ns_index}.2"


async def start_worker(ns: str, host: str, model: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, sys.executable, "-m", "parm.cli", "--log-level", "WARNING", "worker",
        "--model", model, "--host", host, "--port", str(PORT), "--threads", "1",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert b"listening" in line, line
    return proc


async def test_link_cut_mid_run_loses_nothing_and_recovers() -> None:
    reason = _namespaces_available()
    if reason:
        pytest.skip(reason)
    with hosts(3) as made:
        models = ["builtin:linear", "builtin:linear", "builtin:linear:parity_k=2"]
        procs = [await start_worker(ns, address(i), m) for i, ((ns, _), m) in enumerate(zip(made, models))]
        try:
            cfg = FrontendConfig(data=((address(0), PORT), (address(1), PORT)), parity=((address(2), PORT),),
                                 k=2, code="sum", deadline_ms=5000, health_interval_s=0.3, health_timeout_s=0.5)
            async with frontend(cfg) as c:
                x = np.random.default_rng(5).random((2, 784), dtype=np.float32)
                cut_link = made[1][1]

                async def load(n: int) -> list[dict]:
                    bodies = []
                    for _ in range(n):
                        resp = await c.post("/predict", json={"inputs": x.tolist()})
                        assert resp.status == 200, await resp.text()  # nothing lost, nothing timed out
                        bodies.append(await resp.json())
                        await asyncio.sleep(0.02)
                    return bodies

                before = await load(10)
                _ip("link", "set", cut_link, "down")  # the partition: packets to data worker 1 vanish
                during = await load(40)
                _ip("link", "set", cut_link, "up")
                pool = service_of(c).pool
                await eventually(lambda: all(w.healthy for w in pool.data), timeout=20)
                after = await load(10)
            degraded = [sum(sum(b["degraded"]) for b in phase) for phase in (before, during, after)]
            assert degraded[1] >= 1, degraded  # the cut worker's queries were decoded, not lost
            assert service_of(c).stats.deadline_exceeded == 0
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
