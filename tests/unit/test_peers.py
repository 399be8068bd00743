"""frontend.peers: how several serving processes' views merge into one (stats summed, ready only
when every running process is, metrics labelled by process)."""
from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from frontend.peers import PeerReply, merge_metrics, merge_ready, merge_stats


def test_stats_are_summed_and_say_which_processes_answered() -> None:
    merged = merge_stats({"queries": 3, "encode_seconds": 0.5, "flag": True}, 0,
                         [(1, {"queries": 4, "encode_seconds": 0.25}), (2, None)])
    assert merged["queries"] == 7 and merged["encode_seconds"] == 0.75 and "flag" not in merged
    assert merged["processes"] == {"count": 3, "answered": [0, 1]}


def test_ready_needs_every_running_process_but_not_one_being_restarted() -> None:
    own = {"ready": True, "reason": None, "k": 2}
    ok = PeerReply(1, 200, json.dumps({"ready": True}).encode())
    restarting = PeerReply(2, None)
    assert merge_ready(own, 0, [ok, restarting], json.loads)["ready"] is True
    hung = PeerReply(2, 0)
    state = merge_ready(own, 0, [ok, hung], json.loads)
    assert state["ready"] is False and state["reason"].startswith("process 2: no answer")
    not_ready = PeerReply(1, 503, json.dumps({"ready": False, "reason": "no healthy data worker"}).encode())
    state = merge_ready(own, 0, [not_ready], json.loads)
    assert state["ready"] is False and state["reason"] == "process 1: no healthy data worker"
    assert merge_ready({**own, "ready": False, "reason": "x"}, 0, [ok], json.loads)["ready"] is False


def _page(queries: int, latency: float) -> bytes:
    reg = CollectorRegistry()
    Counter("parm_queries", "Queries accepted", registry=reg).inc(queries)
    Histogram("parm_latency_seconds", "latency", registry=reg, buckets=(0.1, 1.0)).observe(latency)
    return generate_latest(reg)


def test_metrics_keep_one_family_each_with_a_process_label() -> None:
    text = merge_metrics({0: _page(3, 0.05), 1: _page(4, 0.5)}).decode()
    assert text.count("# TYPE parm_queries_total counter") == 1 and text.count("# TYPE parm_latency_seconds histogram") == 1
    samples = {(s.name, s.labels.get("process"), s.labels.get("le")): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("parm_queries_total", "0", None)] == 3 and samples[("parm_queries_total", "1", None)] == 4
    assert samples[("parm_latency_seconds_bucket", "0", "0.1")] == 1
    assert samples[("parm_latency_seconds_bucket", "1", "0.1")] == 0


def test_an_unparsable_page_is_left_out() -> None:
    text = merge_metrics({0: _page(3, 0.05), 1: b"not { prometheus"}).decode()
    assert 'process="0"' in text and 'process="1"' not in text
