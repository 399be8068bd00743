"""Counters of the serving path (queries, degraded answers, deadline misses, coding time),
read by /stats and the benchmarks. Plain integers and floats: updating them never blocks."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Stats:
    queries: int = 0
    answered: int = 0
    degraded: int = 0
    defaulted: int = 0
    deadline_exceeded: int = 0
    rejected_overload: int = 0
    worker_errors: int = 0
    retries: int = 0
    hedges: int = 0                    # hedged mode: second copies sent
    hedge_wins: int = 0                # ... that answered first
    hedges_refused: int = 0            # ... not sent: the copy budget was spent (frontend.fallback.CopyBudget)
    groups: int = 0
    groups_coded: int = 0
    groups_partial: int = 0            # closed by the group timeout before k queries arrived
    groups_without_parity: int = 0     # full, but no healthy parity worker
    decodes_avoided: int = 0           # a decode waited (decode policy) and the real output came in time
    # each decode in at most one of the next three (one made at once by the deadline rule: in none)
    decodes_after_wait: int = 0        # a decode waited and then happened: the output was overdue
    decodes_worker_down: int = 0       # decoded at once: a missing output's worker was down or had failed it
    decodes_already_overdue: int = 0   # adaptive, decoded at once: the missing output was overdue already
    fallback_hedges: int = 0           # coded: second copies of overdue queries the code could not rebuild
    fallback_hedge_wins: int = 0       # ... that answered first
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
