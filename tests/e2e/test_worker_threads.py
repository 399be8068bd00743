"""A worker limited to one thread (``parm worker --threads 1``, as every local cluster starts them)
must not spin: its inference runs in a worker thread, which once got torch's default OpenMP team of
2 threads, and they spun through each ``--service-time`` sleep (~10 ms of CPU per 40-ms request)."""
from __future__ import annotations

import numpy as np
import pytest

from frontend.worker_client import WorkerClient
from harness.bench_proc import cpu_seconds
from harness.deploy import BenchCluster, BenchWorkerSpec
from parity_models import checkpoint
from parity_models.models import MLP

pytestmark = pytest.mark.e2e


async def test_a_one_thread_worker_sleeping_its_service_time_does_not_spin(tmp_path) -> None:
    path = tmp_path / "mlp.pt"
    args = {"input_shape": [1, 28, 28], "num_classes": 10}
    ckpt = checkpoint.make_checkpoint(MLP(**args), kind="base", arch="mlp", arch_args=args,
                                      input_shape=[1, 28, 28], num_classes=10, meta={"dataset": "mnist"})
    checkpoint.save(ckpt, path)
    cluster = BenchCluster([BenchWorkerSpec("data", str(path), threads=1, max_batch=1, service_time="fixed:ms=40")])
    await cluster.start()
    try:
        client = WorkerClient(*cluster.addresses("data")[0], role="data")
        client.start()
        assert await client.wait_connected(10)
        x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
        for _ in range(5):  # warm up
            await client.infer(x)
        pid = cluster.workers[0].proc.pid
        before = cpu_seconds(pid)
        for _ in range(40):  # 40 x 40 ms
            await client.infer(x)
        per_request_ms = (cpu_seconds(pid) - before) / 40 * 1000
        await client.close()
    finally:
        await cluster.stop()
    # ~2 ms here when OpenMP is held to one thread, ~10 ms when it spins through the sleep
    assert per_request_ms < 5.0, per_request_ms
