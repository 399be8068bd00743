"""An asyncio event loop on simulated time, for ``parm simulate``: its clock jumps straight to the next
timer whenever nothing is ready, so the real frontend (grouper, group runs, decode policy, hedging,
pool) runs unchanged and deterministically, as fast as the CPU allows. No sockets: a wait for I/O
with no timer left means the simulation can never progress, and is an error.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import selectors
from collections.abc import Mapping
from typing import Any

from frontend import clock


class SimulationStalled(RuntimeError):
    """Every task waits and no timer is set: the simulated system can never make progress."""


class _OrderedTimer(asyncio.TimerHandle):
    """A timer that sorts after every timer set earlier for the same instant: ties run first in,
    first out (asyncio's heap leaves their order to chance), so runs are reproducible and a reply
    scheduled first for an instant is delivered first."""

    __slots__ = ("_seq",)

    def __init__(self, seq: int, *args: Any) -> None:
        super().__init__(*args)
        self._seq = seq

    def __lt__(self, other: object) -> bool:
        if isinstance(other, _OrderedTimer) and self._when == other._when:
            return self._seq < other._seq
        return super().__lt__(other)  # type: ignore[operator]


class _VirtualSelector(selectors.BaseSelector):
    """Never waits: ``select(timeout)`` advances the loop's clock by ``timeout`` and reports no I/O.
    Registration is kept only for the loop's own self-pipe (call_soon_threadsafe)."""

    def __init__(self) -> None:
        self._map: dict[Any, selectors.SelectorKey] = {}
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj if isinstance(fileobj, int) else fileobj.fileno(), events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        if timeout is None:
            raise SimulationStalled("no task can run and no timer is set (a worker that never answers?)")
        self.loop.advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    def close(self) -> None:
        self._map.clear()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``time()`` is simulated seconds from 0; sleeping costs no wall time. Errors raised in callbacks
    (which asyncio would only log) are kept in ``errors`` so the run can fail loudly."""

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0
        self._seq = itertools.count()
        self.errors: list[dict[str, Any]] = []
        self.set_exception_handler(lambda _loop, context: self.errors.append(context))

    def time(self) -> float:
        return self._now

    def run_forever(self) -> None:
        with clock.simulated(self.time):  # the frontend's clock reads simulated seconds while this loop runs
            super().run_forever()

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        self._check_closed()  # type: ignore[attr-defined]
        timer = _OrderedTimer(next(self._seq), when, callback, args, self, context)
        heapq.heappush(self._scheduled, timer)  # type: ignore[attr-defined]
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    def advance(self, seconds: float) -> None:
        self._now += max(seconds, 0.0)
