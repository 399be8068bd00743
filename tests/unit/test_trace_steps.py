"""harness.trace_steps: a query's time split into dispatch, worker round trip and finish, from a trace."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness import trace_steps
from harness.trace_tail import parse_group


def _group(t0: float, worker_s: float, decoded: bool = False) -> list[list]:
    """A k=2 group: both queries sent 1 ms after joining; slot 1's output takes ``worker_s``,
    or never comes and slot 1 is decoded 2 ms after the parity output."""
    events = [[t0, "join", 0, None, None], [t0, "join", 1, None, None],
              [t0 + 0.001, "send", 0, "w0", 0], [t0 + 0.001, "send", 1, "w1", 1],
              [t0 + 0.004, "out", 0, None, None], [t0 + 0.0045, "answer", 0, "own", None]]
    if decoded:
        events += [[t0 + 0.006, "pout", -1, None, None], [t0 + 0.008, "answer", 1, "decoded-overdue", None]]
    else:
        events += [[t0 + 0.001 + worker_s, "out", 1, None, None], [t0 + 0.0012 + worker_s, "answer", 1, "own", None]]
    return events


def test_steps_split_a_query_and_leave_the_worker_step_out_of_a_decoded_answer() -> None:
    own, decoded = (parse_group(_group(10.0, 0.003, decoded=d)) for d in (False, True))
    s = trace_steps.steps(own.queries[1])
    assert s is not None
    assert (s["dispatch"], s["worker"], s["finish"]) == pytest.approx((0.001, 0.003, 0.0002))
    assert s["total"] == pytest.approx(s["dispatch"] + s["worker"] + s["finish"])
    d = trace_steps.steps(decoded.queries[1])
    assert d is not None and math.isnan(d["worker"]) and d["finish"] == pytest.approx(0.007)
    copied = parse_group([[0.0, "join", 0, None, None], [0.001, "send", 0, "w0", 0],
                          [0.050, "answer", 0, "copy", None], [0.060, "out", 0, None, None]])
    c = trace_steps.steps(copied.queries[0])  # a copy won; the first request's late output is not the answer
    assert c is not None and math.isnan(c["worker"]) and c["finish"] == pytest.approx(0.049)


def test_summarize_finds_the_step_behind_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    groups = [_group(float(i), 0.050 if i % 50 == 0 else 0.003) for i in range(200)]  # 4 slow workers' replies
    path.write_text("\n".join(json.dumps(x) for x in [{"clock_s": 0, "wall_s": 0, "groups": 200, "dropped": 0},
                                                      *groups]) + "\n")
    s = trace_steps.summarize(path)
    assert s["queries"] == 400 and s["tail_queries"] >= 4 and s["decoded_or_copied"] == 0
    assert s["worker"]["tail_median_ms"] == pytest.approx(50.0)  # the tail is the worker's, not the frontend's
    assert s["dispatch"]["tail_median_ms"] == pytest.approx(1.0)
    assert "total" in trace_steps.format_steps("coded", s)
