"""Why the slowest answers were slow, from a frontend trace (frontend.trace) and the fault plan: for
each query in a tail, where its own request went (a slowed worker, a healthy one with a queue, an
idle healthy one) and why its group did not answer it sooner (its parity output or a partner's
output came later, the group was partial, or the decode policy waited). ``parm bench --trace``
puts the counts in each coded mode's summary (``tail_causes``). Pure: no I/O but reading the file.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frontend import trace

TAILS = (99.0, 99.9)
NEAR_S = 0.001  # a decode possible less than this before the answer counts as not possible sooner


@dataclass
class QueryRecord:
    """One data slot of a traced group (times on the frontend's loop clock, seconds)."""

    joined: float
    answered: float | None = None
    path: str | None = None
    sends: list[tuple[float, str, int]] = field(default_factory=list)  # (time, worker, ahead) per request
    own_out: float | None = None

    @property
    def latency_s(self) -> float | None:
        return None if self.answered is None else self.answered - self.joined


@dataclass
class GroupRecord:
    queries: list[QueryRecord]
    parity_sends: list[tuple[float, str, int]] = field(default_factory=list)
    parity_outs: list[float] = field(default_factory=list)
    coded: bool = False  # closed full, with a parity query sent


def parse_group(events: Iterable[list[Any]]) -> GroupRecord:
    """A group's [t, kind, slot, what, number] events -> its records."""
    queries: dict[int, QueryRecord] = {}
    g = GroupRecord([])
    for t, kind, slot, what, number in events:
        if kind == "join":
            queries[slot] = QueryRecord(joined=t)
        elif kind == "send" and slot in queries:
            queries[slot].sends.append((t, what, int(number)))
        elif kind == "out" and slot in queries:
            queries[slot].own_out = t if queries[slot].own_out is None else queries[slot].own_out
        elif kind == "answer" and slot in queries:
            queries[slot].answered, queries[slot].path = t, what
        elif kind == "psend":
            g.parity_sends.append((t, what, int(number)))
            g.coded = True
        elif kind == "pout":
            g.parity_outs.append(t)
    g.queries = [queries[s] for s in sorted(queries)]
    return g


def load(path: str | Path) -> tuple[dict[str, Any], list[GroupRecord]]:
    header, groups = trace.read(path)
    return header, [parse_group(events) for events in groups]


Faulted = Callable[[str, float], bool]  # (worker label, loop-clock time) -> the plan had it slowed or down


def cause(g: GroupRecord, slot: int, faulted: Faulted) -> str:
    """'<where its request went>; <why the group did not answer it sooner>' for one answered query."""
    q = g.queries[slot]
    assert q.answered is not None
    return f"{_where(q, faulted)}; {_why_not_sooner(g, slot, faulted)}"


def _where(q: QueryRecord, faulted: Faulted) -> str:
    if not q.sends:
        return "never sent"
    t, worker, ahead = q.sends[0]
    if faulted(worker, t):
        return "slowed worker"
    return f"healthy worker, {min(ahead, 3)}{'+' if ahead >= 3 else ''} ahead" if ahead else "idle healthy worker"


def _why_not_sooner(g: GroupRecord, slot: int, faulted: Faulted) -> str:
    q = g.queries[slot]
    assert q.answered is not None
    if q.path and q.path.startswith("decoded"):
        return "decoded"
    if not g.coded:
        return "partial group (uncoded)"
    others = [o.answered for i, o in enumerate(g.queries) if i != slot]
    parity = min(g.parity_outs) if g.parity_outs else None
    if parity is None or parity >= q.answered - NEAR_S:
        t, worker, ahead = g.parity_sends[0]
        state = "slowed" if faulted(worker, t) else (f"{ahead} ahead" if ahead else "idle")
        return f"parity later ({state} parity worker)"
    if any(o is None or o >= q.answered - NEAR_S for o in others):
        return "partner output later"
    return "decode policy waited"


def tail_causes(groups: list[GroupRecord], faulted: Faulted, tails: Iterable[float] = TAILS) -> dict[str, Any]:
    """For each tail percentile of the frontend's own latency (join to answer): its threshold, the
    queries at or above it, and how many of them had each cause (most common first)."""
    answered = [(g, i) for g in groups for i, q in enumerate(g.queries) if q.answered is not None]
    if not answered:
        return {"queries": 0}
    lat = np.array([g.queries[i].latency_s for g, i in answered])
    out: dict[str, Any] = {"queries": len(answered)}
    for p in tails:
        threshold = float(np.percentile(lat, p))
        counts = Counter(cause(g, i, faulted) for (g, i), s in zip(answered, lat) if s >= threshold)
        out[f"p{p:g}"] = {"threshold_ms": round(1000 * threshold, 2), "queries": sum(counts.values()),
                          "causes": dict(counts.most_common())}
    return out


def plan_faulted(header: dict[str, Any], start_epoch: float, plan_worker: dict[str, int],
                 intervals: dict[int, list[tuple[float, float]]]) -> Faulted:
    """A Faulted for a bench run: a trace's loop-clock time -> plan time (seconds since the load began,
    via the header's clock/wall pair), a worker label -> its plan index (``plan_worker``)."""
    offset = header["wall_s"] - header["clock_s"] - start_epoch

    def faulted(worker: str, t: float) -> bool:
        index = plan_worker.get(worker)
        at = t + offset
        return index is not None and any(a <= at < b for a, b in intervals.get(index, ()))
    return faulted
