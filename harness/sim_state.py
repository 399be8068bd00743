"""The simulator's run record (what workers saw) and the parser of the fault-spec strings that
harness.plan.expand emits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.faults import Fault, parse


class SimRecord:
    """What the simulated workers observe across a run: each query's first data worker (the input
    of a data request is its query's number) and the requests sent and abandoned."""

    def __init__(self, queries: int) -> None:
        self.first_worker = np.full(queries, -1, np.int32)
        self.requests = 0
        self.cancelled = 0  # requests the frontend stopped waiting for (decoded, hedged, group finished)

    def sent(self, worker: Any, inputs: np.ndarray) -> None:
        self.requests += 1
        if worker.role == "data":
            qid = int(inputs[0, 0])
            if 0 <= qid < len(self.first_worker) and self.first_worker[qid] < 0:
                self.first_worker[qid] = worker.id


@dataclass(frozen=True)
class SpecState:
    """The windowed parts of a composed spec; the constant delay part comes from the plan's rules."""

    factor: float = 1.0
    stall: bool = False
    drop: bool = False


def parse_spec(spec: str) -> SpecState:
    """``slow:factor=5+stall+drop+delay:...`` -> SpecState (delay parts are ignored here)."""
    factor, stall, drop = 1.0, False, False
    for part in filter(None, spec.split("+")):
        name, _, rest = part.partition(":")
        if name == "slow":
            factor *= float(rest.split("=", 1)[1])
        stall = stall or name == "stall"
        drop = drop or name == "drop"
    return SpecState(factor, stall, drop)


def delay_faults(spec: str) -> tuple[Fault, ...]:
    """The delay faults of a constant spec (harness.plan.worker_spec), parsed as the worker does."""
    return tuple(f for f in parse(spec) if f.kind == "delay")
