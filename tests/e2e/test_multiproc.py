"""End to end: ``parm serve --processes 2`` on one port in front of real worker processes: both
processes take queries, every query is answered exactly, /stats, /ready and /metrics speak for
both whichever one a probe reaches, a killed process is replaced, and SIGTERM stops them all."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import numpy as np
import pytest

from workers.cluster import LocalCluster, cluster_specs
from workers.model import load_model

pytestmark = pytest.mark.e2e
LINEAR = load_model("builtin:linear")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


async def _banner_port(proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line or proc.poll() is None, "parm serve exited early"
        if match := re.search(r"frontend on http://127\.0\.0\.1:(\d+) .*2 processes", line):
            return int(match.group(1))
    raise AssertionError("no banner")


async def _wait_ready(session: aiohttp.ClientSession, url: str) -> dict:
    for _ in range(400):
        async with session.get(f"{url}/ready") as r:
            body = await r.json()
            if r.status == 200:
                return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"not ready: {body}")


async def _predict_each_on_a_new_connection(url: str, x: np.ndarray) -> np.ndarray:
    """Each request on its own connection, so the kernel spreads them across the processes."""
    async def one(i: int) -> list[float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.post(f"{url}/predict", json={"inputs": x[i:i + 1].tolist()}) as r:
                body = await r.json()
                assert r.status == 200, body
                return body["outputs"][0]
    return np.array(await asyncio.gather(*(one(i) for i in range(len(x)))))


@asynccontextmanager
async def _serving_two(*flags: str) -> AsyncIterator[subprocess.Popen]:
    """Real workers (2 data, 1 parity) and ``parm serve --processes 2 FLAGS`` in front of them; all
    stopped afterwards (the serve process killed if a test left it running)."""
    cluster = LocalCluster(cluster_specs(2, 1, "coded", "builtin:linear", "builtin:linear:parity_k=2"))
    await cluster.start()
    data = ",".join(f"{h}:{p}" for h, p in cluster.addresses("data"))
    parity = ",".join(f"{h}:{p}" for h, p in cluster.addresses("parity"))
    proc = subprocess.Popen([sys.executable, "-m", "parm", "serve", "--data", data, "--parity", parity, "--code", "sum",
                             "--k", "2", "--port", "0", *flags, "--processes", "2", "--health-interval-s", "0.2"],
                            stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await cluster.stop()


async def _queries_per_process(proc: subprocess.Popen) -> list[int]:
    """Each serving process's own count of queries, asked on its unix socket (?scope=process)."""
    counts = []
    for i in range(2):
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(
                path=_socket_of(proc.pid, i))) as unix, unix.get("http://p/stats?scope=process") as r:
            counts.append((await r.json())["queries"])
    return counts


async def test_two_processes_share_the_port_and_answer_for_each_other() -> None:
    async with _serving_two() as proc:
        url = f"http://127.0.0.1:{await _banner_port(proc)}"
        assert len(_children(proc.pid)) == 2
        async with aiohttp.ClientSession() as session:
            ready = await _wait_ready(session, url)
            assert [p["process"] for p in ready["processes"]] in ([0, 1], [1, 0])
            x = np.random.default_rng(5).random((60, 1, 28, 28), dtype=np.float32)
            out = await _predict_each_on_a_new_connection(url, x)
            np.testing.assert_allclose(out, LINEAR.predict(x), rtol=1e-4, atol=1e-4)

            async with session.get(f"{url}/stats") as r:
                stats = await r.json()
            assert stats["queries"] == 60 and stats["answered"] == 60  # summed over both processes
            assert stats["processes"] == {"count": 2, "answered": [0, 1]}
            per_process = await _queries_per_process(proc)  # both took some (60 connections, two listeners)
            assert sum(per_process) == 60 and min(per_process) > 0, per_process
            async with session.get(f"{url}/metrics") as r:
                text = await r.text()
            assert 'process="0"' in text and 'process="1"' in text
            assert text.count("# TYPE parm_queries_total counter") == 1

            victim = _children(proc.pid)[0]
            os.kill(victim, signal.SIGKILL)  # the supervisor replaces it; the other keeps serving meanwhile
            # (connections the kernel had queued at the killed process's listener are reset with it)
            await asyncio.to_thread(_wait_gone, victim)
            await _predict_each_on_a_new_connection(url, x[:10])
            for _ in range(200):
                kids = _children(proc.pid)
                if len(kids) == 2 and victim not in kids:
                    break
                await asyncio.sleep(0.05)
            assert len(kids) == 2 and victim not in kids, kids
            await _wait_ready(session, url)
            out = await _predict_each_on_a_new_connection(url, x)
            np.testing.assert_allclose(out, LINEAR.predict(x), rtol=1e-4, atol=1e-4)
        kids = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert not any(os.path.exists(f"/proc/{k}") and "zombie" not in open(f"/proc/{k}/status").read().lower()
                       for k in kids)


async def test_the_lean_predict_port_is_shared_by_the_processes_too() -> None:
    """--predict-port with --processes 2: one port for the lean listener too, and both processes answer on it."""
    async with _serving_two("--predict-port", "0") as proc:
        url = f"http://127.0.0.1:{await _banner_port(proc)}"
        line = await asyncio.to_thread(proc.stdout.readline)
        match = re.search(r"POST /predict also on (http://127\.0\.0\.1:\d+)/predict", line)
        assert match, line
        lean = match.group(1)
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, url)
            x = np.random.default_rng(6).random((40, 1, 28, 28), dtype=np.float32)
            out = await _predict_each_on_a_new_connection(lean, x)
            np.testing.assert_allclose(out, LINEAR.predict(x), rtol=1e-4, atol=1e-4)
        per_process = await _queries_per_process(proc)
        assert sum(per_process) == 40 and min(per_process) > 0, per_process
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0


def _wait_gone(pid: int) -> None:
    """Until the supervisor has reaped ``pid``. Not merely "zombie": a killed process's group leader
    shows as a zombie while its other threads still exit, and its listener stays open (and takes
    connections it then resets) until the last of them is gone."""
    for _ in range(1000):
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} not reaped")


def _socket_of(parent: int, index: int) -> str:
    """The unix socket of serving process ``index`` (its --peers-dir is on its command line)."""
    for pid in _children(parent):
        argv = open(f"/proc/{pid}/cmdline").read().split("\0")
        if argv[argv.index("--process-index") + 1] == str(index):
            return os.path.join(argv[argv.index("--peers-dir") + 1], f"{index}.sock")
    raise AssertionError(f"no process {index}")


def test_processes_must_be_positive(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "parm", "serve", "--data", "127.0.0.1:1", "--processes", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--processes must be at least 1" in out.stderr


async def test_serving_processes_stop_when_the_supervisor_is_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "parm", "serve", "--data", "127.0.0.1:1", "--mode", "none",
                             "--port", "0", "--processes", "2"], stdout=subprocess.PIPE, text=True)
    try:
        await _banner_port(proc)  # both listen (no worker is needed for that)
        kids = _children(proc.pid)
        assert len(kids) == 2
        proc.kill()  # no drain, no signal forwarded: the processes must notice on their own
        proc.wait()
        for _ in range(200):
            if not any(os.path.exists(f"/proc/{k}") for k in kids):
                break
            await asyncio.sleep(0.05)
        assert not any(os.path.exists(f"/proc/{k}") for k in kids), kids
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
