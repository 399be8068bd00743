"""A query in flight and its answer. Each query carries its own future, resolved exactly once:
by its own output, by a decode (degraded), or at its deadline (error or default output). The
answer says which way it came (``path``), so a tail can be explained query by query."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Answer:
    output: np.ndarray       # (C,) float32
    degraded: bool = False   # rebuilt from the parity output and the other k-1 outputs
    default: bool = False    # the configured default output, given at the deadline
    path: str = "own"        # one of PATHS: which request or rule produced this answer


# own: the query's own request; copy / hedge: a fallback copy or a hedged copy answered first;
# decoded-*: rebuilt, and the rule that fired (worker down, output overdue, worker silent, the
# deadline was near, decode at once, fixed grace); default: the default output at the deadline
PATHS = ("own", "copy", "hedge", "decoded-down", "decoded-overdue", "decoded-silent", "decoded-deadline",
         "decoded-eager", "decoded-grace", "default")


@dataclass(eq=False)
class Query:
    inputs: np.ndarray                      # (*S) float32, one query
    deadline: float                         # event-loop time by which it must be answered
    future: asyncio.Future[Answer] = field(repr=False)

    def answer(self, answer: Answer) -> bool:
        """Resolve with ``answer`` unless already resolved; True if this call resolved it."""
        if self.future.done():
            return False
        self.future.set_result(answer)
        return True

    def fail(self, exc: BaseException) -> bool:
        if self.future.done():
            return False
        self.future.set_exception(exc)
        return True
