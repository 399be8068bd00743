"""Prometheus metrics of the frontend (GET /metrics): a per-app registry with a query-latency
histogram observed as each query resolves, and everything else read from the Service's counters
and the worker pool at scrape time, so the serving path pays for one histogram update per query.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily

if TYPE_CHECKING:
    from frontend.service import Service

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COUNTERS = {  # Stats field -> (metric name, help)
    "queries": ("parm_queries", "Queries accepted"),
    "answered": ("parm_answers", "Queries answered with a model output (own or decoded)"),
    "degraded": ("parm_degraded_answers", "Answers decoded from the parity output (approximate)"),
    "defaulted": ("parm_default_answers", "Queries given the configured default output at their deadline"),
    "deadline_exceeded": ("parm_deadline_misses", "Queries failed with 504 at their deadline"),
    "rejected_overload": ("parm_rejected_overload", "Requests refused with 503 by admission control"),
    "worker_errors": ("parm_worker_errors", "Worker requests that failed (reset, error reply)"),
    "retries": ("parm_redispatches", "Data queries re-sent after a failure or with no healthy worker"),
    "hedges": ("parm_hedges", "Hedged second copies sent"),
    "groups": ("parm_groups", "Coding groups closed"),
    "groups_partial": ("parm_groups_partial", "Groups closed by the group timeout, served uncoded"),
    "groups_without_parity": ("parm_groups_without_parity", "Full groups served uncoded: no healthy parity worker"),
    "encode_seconds": ("parm_encode_seconds", "Time spent encoding parity queries"),
    "decode_seconds": ("parm_decode_seconds", "Time spent decoding missing outputs"),
}


class Metrics:
    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("parm_query_latency_seconds", "Time from acceptance to answer, per query",
                                 ["mode", "degraded"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.http_errors = Counter("parm_http_errors", "Error responses by code", ["code"], registry=self.registry)
        self.registry.register(_ServiceCollector(service))
        mode = service.cfg.mode
        self._observe = {False: self.latency.labels(mode, "false").observe,
                         True: self.latency.labels(mode, "true").observe}

    def observe_query(self, seconds: float, degraded: bool) -> None:
        self._observe[degraded](seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ServiceCollector:
    """Reads counters, queue depth and per-worker state when Prometheus scrapes."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        s = self.service
        stats = s.stats.as_dict()
        for field, (name, doc) in COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=stats[field])
        yield GaugeMetricFamily("parm_pending_queries", "Accepted queries without an answer (admission depth)",
                                value=s.pending)
        yield GaugeMetricFamily("parm_open_groups", "Coding groups with work in flight", value=len(s.runs))
        yield GaugeMetricFamily("parm_ready", "1 when the frontend accepts queries", value=int(s.ready()))
        yield GaugeMetricFamily("parm_coded", "1 when parity protection is available (coded mode, parity up)",
                                value=int(s.cfg.coded and any(w.healthy for w in s.pool.parity)))
        yield from self._workers()

    def _workers(self) -> Iterator[Metric]:
        labels = ["worker", "role"]
        up = GaugeMetricFamily("parm_worker_up", "1 when the worker passes its real-inference probe", labels=labels)
        in_flight = GaugeMetricFamily("parm_worker_in_flight", "Requests in flight to the worker", labels=labels)
        latency = SummaryMetricFamily("parm_worker_latency_seconds", "Round trip of answered worker requests",
                                      labels=labels)
        for w in self.service.pool.all:
            key = [f"{w.host}:{w.port}", w.role]
            up.add_metric(key, int(w.healthy))
            in_flight.add_metric(key, w.in_flight)
            latency.add_metric(key, count_value=w.answered, sum_value=w.latency_sum)
        yield from (up, in_flight, latency)
