"""The tail analysis of a trace (harness.trace_tail): each slow query's cause, from hand-written
group events; the plan's clock matched to the trace's."""
from __future__ import annotations

from typing import Any

from harness import trace_tail

A, B, P = "h:1", "h:2", "h:9"


def group(a_sent_ahead: int = 0, a_out: float | None = 0.010, b_out: float = 0.010, p_out: float | None = 0.012,
          a_answer: float = 0.010, a_path: str = "own") -> list[list[Any]]:
    """Two queries joining at 0; query a on worker A, b on B, the parity query on P at 0.001."""
    events: list[list[Any]] = [[0.0, "join", 0, None, None], [0.0, "send", 0, A, a_sent_ahead],
                               [0.0, "join", 1, None, None], [0.0, "send", 1, B, 0], [0.001, "close", -1, None, None],
                               [0.001, "psend", 2, P, 0], [b_out, "out", 1, None, None],
                               [b_out, "answer", 1, "own", None]]
    if p_out is not None:
        events.append([p_out, "pout", 2, None, None])
    if a_out is not None:
        events.append([a_out, "out", 0, None, None])
    events.append([a_answer, "answer", 0, a_path, None])
    return sorted(events, key=lambda e: e[0])


def never(worker: str, t: float) -> bool:
    return False


def a_slowed(worker: str, t: float) -> bool:
    return worker == A


def test_causes_say_where_the_request_went_and_why_the_group_did_not_answer_sooner() -> None:
    cause = trace_tail.cause
    # slowed worker, its group decoded it
    assert cause(trace_tail.parse_group(group(a_out=None, a_answer=0.05, a_path="decoded-overdue")), 0,
                 a_slowed) == "slowed worker; decoded"
    # slowed worker, the parity output came after the real one: nothing to decode with
    assert cause(trace_tail.parse_group(group(a_out=0.2, a_answer=0.2, p_out=0.3)), 0,
                 a_slowed) == "slowed worker; parity later (idle parity worker)"
    # a healthy worker's queue, and the policy waited with the parity output in
    assert cause(trace_tail.parse_group(group(a_sent_ahead=2, a_out=0.09, a_answer=0.09)), 0,
                 never) == "healthy worker, 2 ahead; decode policy waited"
    assert cause(trace_tail.parse_group(group(a_sent_ahead=7, a_out=0.09, a_answer=0.09)), 0,
                 never).startswith("healthy worker, 3+ ahead")
    # the partner answered after this query: a decode needed its output
    assert cause(trace_tail.parse_group(group(a_out=0.05, a_answer=0.05, b_out=0.08)), 0,
                 never) == "idle healthy worker; partner output later"


def test_tail_causes_counts_the_slowest_queries() -> None:
    groups = [trace_tail.parse_group(group()) for _ in range(98)]
    groups += [trace_tail.parse_group(group(a_out=0.3, a_answer=0.3, p_out=0.4)) for _ in range(2)]
    out = trace_tail.tail_causes(groups, a_slowed, tails=(99.0,))
    assert out["queries"] == 200
    assert out["p99"]["queries"] == 2 and out["p99"]["threshold_ms"] > 10
    assert out["p99"]["causes"] == {"slowed worker; parity later (idle parity worker)": 2}


def test_plan_time_is_matched_to_the_trace_clock() -> None:
    # the trace's loop clock read 100 s when the wall clock read 5000 s; the load began at wall 4990 s
    faulted = trace_tail.plan_faulted({"clock_s": 100.0, "wall_s": 5000.0}, 4990.0, {A: 0},
                                      {0: [(1.0, 2.0)]})
    assert faulted(A, 91.5) and not faulted(A, 90.5) and not faulted(A, 92.0) and not faulted(B, 91.5)
