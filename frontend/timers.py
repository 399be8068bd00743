"""Many short-lived deadlines on one event-loop timer: each request's deadline, each data query's
fallback (overdue) time and each group's timeout are entries in one heap, and the loop holds a single
timer, for the earliest. Nearly all of them are cancelled (the answer came first); cancelling an entry
only marks it, and marked entries are dropped when they reach the top. On uvloop a loop timer per
entry costs a libuv timer and a handle each (~3-5 us to set and cancel); an entry costs a heap push.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

from frontend import clock

COMPACT_AT = 4096  # rebuild the heap without cancelled entries once this many wait in it, over half


class Entry:
    """One deadline. ``cancel()`` releases its callback and arguments at once (the query they hold),
    though the entry itself leaves the heap later."""

    __slots__ = ("args", "callback", "due", "wheel")

    def __init__(self, wheel: TimerWheel, due: float, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.wheel, self.due, self.callback, self.args = wheel, due, callback, args

    @property
    def cancelled(self) -> bool:
        return self.callback is None

    def when(self) -> float:
        return self.due

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback, self.args = None, ()
            self.wheel.dead += 1


class TimerWheel:
    """``call_at(due, callback, *args)`` on clock.now()'s scale -> an Entry. Entries due within the
    loop's timer slack of now run when the timer fires (uvloop fires up to ~0.5 ms early), in due order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Entry]] = []  # (due, sequence: ties first in, first out, entry)
        self._seq = itertools.count()
        self._armed: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")
        self.dead = 0  # cancelled entries still in the heap

    def __len__(self) -> int:
        return len(self._heap) - self.dead

    def call_at(self, due: float, callback: Callable[..., None], *args: Any) -> Entry:
        entry = Entry(self, due, callback, args)
        heapq.heappush(self._heap, (due, next(self._seq), entry))  # tuples: compared in C
        if due < self._armed_for:
            self._arm(due)
        return entry

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Entry:
        return self.call_at(clock.now() + delay, callback, *args)

    def close(self) -> None:
        """Forget every entry and the loop timer (the service is stopping)."""
        if self._armed is not None:
            self._armed.cancel()
        self._armed, self._armed_for, self._heap, self.dead = None, float("inf"), [], 0

    def _arm(self, due: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed_for = due
        # clock.now() and the loop's time() share CLOCK_MONOTONIC's base (frontend.clock)
        self._armed = asyncio.get_running_loop().call_at(due, self._fire)

    def _fire(self) -> None:
        self._armed, self._armed_for = None, float("inf")
        heap, horizon = self._heap, clock.now() + clock.timer_slack()
        while heap and (heap[0][2].callback is None or heap[0][0] <= horizon):
            entry = heapq.heappop(heap)[2]
            callback, args = entry.callback, entry.args
            if callback is None:
                self.dead -= 1
                continue
            entry.callback, entry.args = None, ()  # fired: a late cancel() is a no-op
            try:
                callback(*args)  # may add entries or cancel others
            except Exception as exc:  # noqa: BLE001  # reported as the loop reports a failing callback; the others still run
                asyncio.get_running_loop().call_exception_handler(
                    {"message": f"timer callback {callback!r} failed", "exception": exc})
        if self.dead > COMPACT_AT and self.dead * 2 > len(heap):
            self._heap = heap = [item for item in heap if item[2].callback is not None]
            heapq.heapify(heap)
            self.dead = 0
        if heap and heap[0][0] < self._armed_for:  # a callback may have armed for a later entry of its own
            self._arm(heap[0][0])
