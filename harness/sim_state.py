"""Plain state records of the simulator (requests, fetch loops, coding groups, workers) and the
parser of the fault-spec strings that harness.plan.expand emits.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from workers.faults import Fault, parse


class Req:
    """One request as sent to one worker. ``live``: the frontend still waits for it."""

    __slots__ = ("counted", "fetch", "live", "sent", "worker")

    def __init__(self, fetch: Fetch, worker: int, sent: float) -> None:
        self.fetch, self.worker, self.sent, self.live = fetch, worker, sent, True
        self.counted = True  # still in the frontend's in-flight count of its worker


class Fetch:
    """One ``GroupRun._fetch`` loop (or the parity request): re-sends after failures until done."""

    __slots__ = ("attempt", "done", "group", "parity", "req", "slot", "started", "tried")

    def __init__(self, group: Group, slot: int, parity: bool = False) -> None:
        self.group, self.slot, self.parity = group, slot, parity
        self.tried: set[int] = set()
        self.attempt = 0
        self.req: Req | None = None
        self.done = False
        self.started = -1.0  # time of the first send (hedged mode records query latency from it)


class Group:
    """A coding group (or, uncoded, one query): the queries, which slots have answers, its fetches."""

    __slots__ = (
        "answered",
        "closed",
        "coded",
        "decode_pending",
        "fetches",
        "finished",
        "parity_failed",
        "parity_out",
        "qids",
        "resolved",
        "used",
    )

    def __init__(self) -> None:
        self.qids: list[int] = []
        self.closed = False
        self.coded = False
        self.answered: set[int] = set()     # data slots with an output or a decoded answer
        self.parity_out = False
        self.parity_failed = False
        self.resolved = 0                    # queries answered or failed
        self.finished = False
        self.used: set[int] = set()          # workers holding a query of this group
        self.fetches: list[Fetch] = []
        self.decode_pending = False


class Worker:
    """A worker process: FIFO queue, the batch in service, and its current fault state."""

    __slots__ = (
        "batch",
        "busy_s",
        "busy_since",
        "crashed",
        "delay_faults",
        "delayed",
        "dropping",
        "epoch",
        "factor",
        "held",
        "id",
        "queue",
        "served",
        "stalled",
        "wasted",
    )

    def __init__(self, wid: int, delay_faults: tuple[Fault, ...]) -> None:
        self.id = wid
        self.queue: deque[Req] = deque()
        self.batch: list[Req] | None = None
        self.held: float | None = None       # service time of a batch waiting for a stall to end
        self.epoch = 0                       # bumped on crash/drop: stale completions are ignored
        self.crashed = False
        self.dropping = False
        self.stalled = False
        self.factor = 1.0
        self.delayed: set[Req] = set()       # requests sleeping in a delay fault before the queue
        self.delay_faults = delay_faults
        self.busy_since = 0.0
        self.busy_s = 0.0
        self.served = 0
        self.wasted = 0                      # requests served after the frontend stopped waiting

    @property
    def down(self) -> bool:
        return self.crashed or self.dropping


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
