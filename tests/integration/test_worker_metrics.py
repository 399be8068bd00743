"""A worker's own Prometheus endpoint reports what it served, its load and its fault."""
from __future__ import annotations

import asyncio
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from frontend.worker_client import WorkerClient
from tests.conftest import worker_servers
from workers.cluster import free_port
from workers.metrics import start_metrics_server


async def test_worker_metrics_count_requests_rows_and_show_the_fault() -> None:
    async with worker_servers(["builtin:linear"]) as ws:
        port = free_port()
        start_metrics_server(ws[0], "127.0.0.1", port)
        ws[0].faults.set("delay:ms=1")
        client = WorkerClient("127.0.0.1", ws[0].port)
        client.start()
        try:
            assert await client.wait_connected(5)
            for _ in range(3):
                await client.infer(np.zeros((2, 1, 28, 28), np.float32))
        finally:
            await client.close()
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
    samples = {s.name: s for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples["parm_worker_requests_total"].value >= 3
    assert samples["parm_worker_rows_total"].value >= 6
    assert samples["parm_worker_inference_seconds_total"].value > 0
    assert samples["parm_worker_info"].labels["fault"] == "delay:ms=1"
