"""A real Seldon MLServer (a subprocess, custom runtime in tests/fixtures/mlserver) as V2 data and
parity workers: the frontend serves coded queries through it while a native data worker stalls."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from frontend.config import FrontendConfig
from frontend.errors import WorkerFailed
from frontend.v2_worker import V2WorkerClient
from tests.conftest import eventually, frontend, service_of, worker_servers
from workers.cluster import free_port
from workers.model import load_model

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "mlserver"
LINEAR = load_model("builtin:linear")
PARITY = "builtin:linear:parity_k=2"
START_TIMEOUT_S = 180.0  # imports torch and loads two models; slow on a loaded 2-core machine
RNG = np.random.default_rng(2)


def images(n: int) -> np.ndarray:
    return RNG.random((n, 1, 28, 28), dtype=np.float32)


def mlserver_executable() -> Path:
    """The ``mlserver`` script of this interpreter's environment, installed on first use."""
    exe = Path(sys.executable).parent / "mlserver"
    if not exe.exists():
        setup = subprocess.run(["bash", str(REPO / "scripts" / "setup_mlserver.sh")], capture_output=True,
                               text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=900)
        if setup.returncode != 0 or not exe.exists():
            pytest.skip(f"cannot install mlserver (scripts/setup_mlserver.sh): {(setup.stderr or setup.stdout)[-800:]}")
    return exe


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"mlserver exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"mlserver not ready within {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One MLServer hosting "linear" and "linear-parity"; yields its base address http-less: host:port."""
    exe = mlserver_executable()
    workdir = tmp_path_factory.mktemp("mlserver")  # MLServer writes .metrics/.envs under its cwd
    port = free_port()
    env = {**os.environ, "MLSERVER_HTTP_PORT": str(port), "MLSERVER_GRPC_PORT": str(free_port()),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = workdir / "mlserver.log"
    t0 = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(exe), "start", str(FIXTURES)], cwd=workdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc, log)
        print(f"mlserver ready in {time.monotonic() - t0:.1f}s")
        yield f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def test_client_against_mlserver(mlserver: str) -> None:
    client = V2WorkerClient(f"v2+http://{mlserver}/linear", "data", health_interval_s=0.2)
    client.start()
    try:
        await eventually(lambda: client.healthy, timeout=10)
        assert client.info["name"] == "linear" and client.info["input_shape"] == [1, 28, 28]
        assert client.info["model_id"] == LINEAR.info["model_id"]
        x = images(5)
        np.testing.assert_allclose(await client.infer(x), LINEAR.predict(x), rtol=1e-6, atol=1e-7)
    finally:
        await client.close()
    missing = V2WorkerClient(f"v2+http://{mlserver}/nope", "data")
    missing.start()
    try:
        with pytest.raises(WorkerFailed, match="HTTP 404.*nope"):
            await missing.infer(images(1))
    finally:
        await missing.close()


async def test_coded_queries_through_mlserver_with_a_stalled_worker(mlserver: str, addr) -> None:
    async with worker_servers(["builtin:linear"]) as ws:
        cfg = FrontendConfig(data=(addr(ws)[0], f"v2+http://{mlserver}/linear"),
                             parity=(f"v2+http://{mlserver}/linear-parity",), k=2, code="sum", mode="coded",
                             deadline_ms=5000, health_interval_s=5.0, health_timeout_s=3.0)
        async with frontend(cfg) as c:
            await eventually(lambda: service_of(c).readiness()["coded"], timeout=10)
            ready = service_of(c).readiness()
            assert ready["healthy_data_workers"] == 2, ready
            assert not [w.refused for w in service_of(c).pool.all if w.refused]  # native and V2 models agree
            ws[0].faults.set("stall")  # the native data worker stalls: its queries are decoded from MLServer's parity
            x = images(8)
            resp = await c.post("/predict", json={"inputs": x.tolist()})
            body = await resp.json()
            assert resp.status == 200, body
            assert sum(body["degraded"]) == 4, body["degraded"]
            np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-4, atol=1e-4)
            stats = service_of(c).stats
            assert stats.groups_coded == 4 and stats.degraded == 4
            ws[0].faults.set("none")
