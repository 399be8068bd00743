"""A worker's own Prometheus metrics (``parm worker --metrics-port P``): read from the server's
counters at scrape time by a collector, served over HTTP by prometheus-client in a thread, so the
serving path pays nothing."""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

if TYPE_CHECKING:
    from workers.server import WorkerServer


class WorkerCollector:
    def __init__(self, server: WorkerServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        s = self.server
        yield CounterMetricFamily("parm_worker_requests", "Inference requests answered", value=s.requests_served)
        yield CounterMetricFamily("parm_worker_batches", "Batches run", value=s.batches_run)
        yield CounterMetricFamily("parm_worker_rows", "Queries inferred (rows over all batches)", value=s.rows_run)
        yield CounterMetricFamily("parm_worker_inference_seconds", "Time spent in the model", value=s.inference_seconds)
        yield GaugeMetricFamily("parm_worker_in_flight", "Inference requests received and not answered",
                                value=s.in_flight)
        yield InfoMetricFamily("parm_worker", "The model served and the fault injected",
                               value={"model": str(s.model.info.get("name")), "kind": str(s.model.info.get("kind")),
                                      "fault": s.faults.spec})


def start_metrics_server(server: WorkerServer, host: str, port: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(WorkerCollector(server))
    start_http_server(port, addr=host, registry=registry)
    return registry
