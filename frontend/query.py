"""A query in flight and its answer. Each query is settled exactly once: by its own output, by a
decode (degraded), or at its deadline (error or default output). The answer says which way it came
(``path``), so a tail can be explained query by query. A query tells its group and its request when
it settles, by direct calls rather than future callbacks: the serving path schedules nothing per query.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from frontend import clock

if TYPE_CHECKING:
    from frontend.timers import Entry


class Answer(NamedTuple):  # a tuple: built once per query, cheaper than a frozen dataclass
    output: np.ndarray       # (C,) float32
    degraded: bool = False   # rebuilt from the parity output and the other k-1 outputs
    default: bool = False    # the configured default output, given at the deadline
    path: str = "own"        # one of PATHS: which request or rule produced this answer


# own: the query's own request; copy / hedge: a fallback copy or a hedged copy answered first;
# decoded-*: rebuilt, and the rule that fired (worker down, output overdue, worker silent, the
# deadline was near, decode at once, fixed grace); default: the default output at the deadline
PATHS = ("own", "copy", "hedge", "decoded-down", "decoded-overdue", "decoded-silent", "decoded-deadline",
         "decoded-eager", "decoded-grace", "default")


class Settled(Protocol):
    def settled(self, query: Query) -> None:
        """``query`` has just been answered or failed."""


class Query:
    """One query: (*S) float32 ``inputs`` and the loop-clock time it must be answered by. ``owner``
    (the request it came in) and ``group`` (its coding group, once it joins one) hear when it settles."""

    __slots__ = ("deadline", "done", "error", "group", "inputs", "owner", "result")

    def __init__(self, inputs: np.ndarray, deadline: float, owner: Settled | None = None) -> None:
        self.inputs = inputs
        self.deadline = deadline
        self.owner = owner
        self.group: Settled | None = None
        self.done = False
        self.result: Answer | None = None
        self.error: BaseException | None = None

    def answer(self, answer: Answer) -> bool:
        """Settle with ``answer`` unless already settled; True if this call settled it."""
        if self.done:
            return False
        self.done, self.result = True, answer
        self._tell()
        return True

    def fail(self, exc: BaseException) -> bool:
        if self.done:
            return False
        self.done, self.error = True, exc
        self._tell()
        return True

    def _tell(self) -> None:
        if self.owner is not None:
            self.owner.settled(self)
        if self.group is not None:
            self.group.settled(self)

    def __repr__(self) -> str:
        state: Any = self.result.path if self.result is not None else self.error
        return f"Query(done={self.done}, {state!r})"


class Pending:
    """One request's queries until all are settled: then its one deadline timer is cancelled and its one
    future resolved. ``on_settled(query, seconds since accepted)`` is told of each as it settles."""

    __slots__ = ("future", "left", "on_settled", "queries", "start", "timer")

    def __init__(self, future: asyncio.Future[None], start: float,
                 on_settled: Callable[[Query, float], None]) -> None:
        self.future, self.start, self.on_settled = future, start, on_settled
        self.queries: list[Query] = []
        self.left = 0
        self.timer: Entry | None = None  # its deadline (frontend.timers)

    def settled(self, query: Query) -> None:
        self.on_settled(query, clock.now() - self.start)
        self.left -= 1
        if self.left == 0:
            if self.timer is not None:
                self.timer.cancel()
            if not self.future.done():  # done: the handler was cancelled (its client went away)
                self.future.set_result(None)
