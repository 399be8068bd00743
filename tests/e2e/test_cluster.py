"""End to end: real worker processes on loopback, the real frontend, a real stalled worker,
and ``parm up`` as a user runs it (started, queried, stopped by SIGTERM, no orphans left)."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from frontend.config import FrontendConfig
from frontend.worker_client import WorkerClient
from tests.conftest import frontend, service_of
from workers.cluster import LocalCluster, cluster_specs
from workers.model import load_model

pytestmark = pytest.mark.e2e
LINEAR = load_model("builtin:linear")


async def set_fault(address: tuple[str, int], spec: str) -> None:
    client = WorkerClient(*address, role="control")
    client.start()
    try:
        assert await client.wait_connected(5.0)
        await client.set_fault(spec)
    finally:
        await client.close()


@asynccontextmanager
async def coded_cluster(health_interval_s: float) -> AsyncIterator[tuple[LocalCluster, TestClient]]:
    """2 data + 1 parity worker processes (builtin linear, sum code, k=2) behind the frontend."""
    cluster = LocalCluster(cluster_specs(2, 1, "coded", "builtin:linear", "builtin:linear:parity_k=2"))
    await cluster.start()
    try:
        cfg = FrontendConfig(data=cluster.addresses("data"), parity=cluster.addresses("parity"), k=2, code="sum",
                             deadline_ms=3000, health_interval_s=health_interval_s)
        async with frontend(cfg) as c:
            yield cluster, c
    finally:
        await cluster.stop()
    assert all(w.proc.returncode is not None for w in cluster.workers)


async def test_stalled_worker_process_is_decoded_within_the_deadline() -> None:
    async with coded_cluster(health_interval_s=30.0) as (cluster, c):
        await set_fault(cluster.addresses("data")[1], "stall")
        x = np.random.default_rng(1).random((10, 1, 28, 28), dtype=np.float32)
        t0 = time.monotonic()
        results = await asyncio.gather(*(c.post("/predict", json={"inputs": x[i:i + 2].tolist()})
                                         for i in range(0, 10, 2)))
        bodies = [await r.json() for r in results]
        assert time.monotonic() - t0 < 3.0 and all(r.status == 200 for r in results), bodies
        outputs = np.concatenate([np.array(b["outputs"]) for b in bodies])
        degraded = sum(sum(b["degraded"]) for b in bodies)
        assert degraded == 5  # one query of every group sat on the stalled process
        # exact for a linear model: parity output minus the other equals the missing output
        np.testing.assert_allclose(outputs, LINEAR.predict(x), rtol=1e-4, atol=1e-4)
        assert service_of(c).stats.degraded == 5
        await set_fault(cluster.addresses("data")[1], "none")


async def test_crashed_worker_process_is_survived() -> None:
    async with coded_cluster(health_interval_s=0.2) as (cluster, c):
        await cluster.kill(0)  # SIGKILL: the connection resets, in-flight work is re-sent or decoded
        x = np.random.default_rng(2).random((8, 1, 28, 28), dtype=np.float32)
        resp = await c.post("/predict", json={"inputs": x.tolist()})
        body = await resp.json()
        assert resp.status == 200, body
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-4, atol=1e-4)
        ready = await (await c.get("/ready")).json()
        assert ready["healthy_data_workers"] == 1


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def test_parm_up_serves_and_shuts_down_without_orphans(tmp_path) -> None:
    port = 18000 + os.getpid() % 1000
    proc = subprocess.Popen([sys.executable, "-m", "parm.cli", "up", "--model", "builtin:linear", "--code", "sum",
                             "--workers", "2", "--k", "2", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "frontend on" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "parm up exited early"
        assert re.search(rf"http://127\.0\.0\.1:{port}", line), line
        workers = _children(proc.pid)
        assert len(workers) == 3  # 2 data + 1 parity
        x = np.random.default_rng(3).random((4, 784), dtype=np.float32)
        for _ in range(100):  # readiness follows the workers' connections and first health probes
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready") as r:
                    if json.load(r)["ready"]:
                        break
            except urllib.error.HTTPError as exc:  # 503 until then
                assert exc.code == 503, exc
            time.sleep(0.05)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"inputs": x.tolist()}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            body = json.load(r)
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x.reshape(4, 1, 28, 28)), atol=1e-4)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        time.sleep(0.2)
        for pid in workers:
            assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _post(port: int, x: np.ndarray) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"inputs": x.tolist()}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_sigterm_drains_queries_in_flight_and_refuses_new_ones() -> None:
    import threading

    port = 19000 + os.getpid() % 1000
    proc = subprocess.Popen([sys.executable, "-m", "parm.cli", "up", "--code", "sum", "--workers", "2",
                             "--port", str(port), "--fault", "0=delay:ms=600", "--fault", "1=delay:ms=600",
                             "--drain-timeout-s", "10"], stdout=subprocess.PIPE, text=True)
    try:
        while "frontend on" not in (line := proc.stdout.readline()):
            assert line, "parm up exited early"
        for _ in range(200):  # /ready answers 503 until the workers pass their first probes
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready"):
                    break
            except urllib.error.HTTPError:
                time.sleep(0.05)
        x = np.random.default_rng(4).random((2, 784), dtype=np.float32)
        result: list[tuple[int, dict]] = []
        inflight = threading.Thread(target=lambda: result.append(_post(port, x)))
        inflight.start()
        time.sleep(0.2)  # the request is now waiting on the slow workers
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        status, body = _post(port, x)  # still listening while draining: a clear 503, not a reset
        assert status == 503 and body["code"] == "shutting_down", body
        inflight.join(timeout=20)
        assert result and result[0][0] == 200, result  # the query in flight was answered
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_parm_up(*flags: str, state_dir: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """``parm up FLAGS`` as a user runs it; returns the process and what its banner says: the
    frontend URL, each worker's address by data:I / parity:I, and the state file."""
    env = {**os.environ, "PARM_STATE_DIR": str(state_dir)}
    env.pop("PARM_WORKER_SECRET", None)
    proc = subprocess.Popen([sys.executable, "-m", "parm.cli", "up", *flags], stdout=subprocess.PIPE, text=True,
                            env=env)
    found: dict[str, str] = {}
    deadline = time.monotonic() + 90
    while "state" not in found and time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, "parm up exited early"
        if match := re.search(r"frontend on (http://\S+)", line):
            found["url"] = match.group(1)
        found.update(re.findall(r"((?:data|parity):\d+)=(\S+)", line))
        if match := re.search(r"state file: (\S+)", line):
            found["state"] = match.group(1)
    return proc, found


def wait_ready(url: str) -> None:
    for _ in range(600):  # readiness follows the first health probes
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=5) as r:
                if json.load(r)["ready"]:
                    return
        except urllib.error.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("the frontend never became ready")


def predict(url: str, x: np.ndarray) -> tuple[int, dict]:
    req = urllib.request.Request(f"{url}/predict", data=json.dumps({"inputs": x.tolist()}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.load(r)


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bare_parm_up_serves_a_coded_cluster_on_its_defaults(tmp_path) -> None:
    proc, found = start_parm_up("--port", "0", state_dir=tmp_path)  # --port 0: 8080 may be taken on a test machine
    try:
        assert set(found) >= {"url", "data:0", "data:1", "parity:0", "state"}, found
        wait_ready(found["url"])
        x = np.random.default_rng(5).random((4, 784), dtype=np.float32)
        status, body = predict(found["url"], x)
        assert status == 200
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x.reshape(4, 1, 28, 28)), atol=1e-4)
        assert Path(found["state"]).is_file()
    finally:
        assert stop(proc) == 0
    assert not Path(found["state"]).exists()  # the secret does not outlive the cluster


def parm_fault(*argv: str, state_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PARM_STATE_DIR": str(state_dir)}
    env.pop("PARM_WORKER_SECRET", None)
    return subprocess.run([sys.executable, "-m", "parm.cli", "fault", *argv], capture_output=True, text=True,
                          env=env, timeout=60)


def test_parm_fault_stalls_and_heals_a_worker_of_a_parm_up_cluster(tmp_path) -> None:
    # a long health interval keeps the stalled worker in rotation, as a straggler that passes its probes
    proc, found = start_parm_up("--port", "0", "--health-interval-s", "60", state_dir=tmp_path / "state")
    try:
        wait_ready(found["url"])
        stalled = found["data:0"]
        result = parm_fault(stalled, "stall", state_dir=tmp_path / "state")
        assert result.returncode == 0 and result.stdout.strip() == f"{stalled}: fault set to 'stall'", result
        x = np.random.default_rng(6).random((4, 784), dtype=np.float32)
        status, body = predict(found["url"], x)
        # a group's queries go to different workers, so groups with one on the stalled worker are decoded
        assert status == 200 and sum(body["degraded"]) >= 1, body
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x.reshape(4, 1, 28, 28)), atol=1e-4)

        unknown = parm_fault(stalled, "none", state_dir=tmp_path / "elsewhere")  # no state file: no secret
        assert unknown.returncode == 1 and unknown.stdout == "", unknown
        assert unknown.stderr.count("\n") == 1 and "requires its cluster's secret" in unknown.stderr, unknown.stderr

        healed = parm_fault("data:0", "none", state_dir=tmp_path / "state")
        assert healed.returncode == 0 and healed.stdout.strip() == f"data:0 ({stalled}): fault set to 'none'", healed
        assert predict(found["url"], x)[0] == 200
    finally:
        assert stop(proc) == 0
