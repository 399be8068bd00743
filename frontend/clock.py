"""The serving path's one clock. Every send time, round trip, due time and timer of the frontend
reads it, so ``parm simulate`` runs the same code on a loop whose clock is simulated
(harness.virtual_loop). CPU-cost counters (encode/decode seconds) keep perf_counter.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

try:  # uvloop's loop.time() is libuv's millisecond clock, cached once per loop iteration
    from uvloop import Loop as _MillisecondLoop
except ImportError:  # pragma: no cover - uvloop is a core dependency, but the frontend runs without it
    _MillisecondLoop = ()  # type: ignore[assignment,misc]

EXACT_TIMER_SLACK_S = 1e-4  # asyncio's timers fire on time, up to scheduling noise
# uvloop's fire on its millisecond clock, which never runs ahead of time.monotonic: up to ~0.5 ms
# before a precise due time (0.3 ms measured). Keep this >= 0.5 ms, or a re-armed timer could spin.
MS_TIMER_SLACK_S = 1e-3


_simulated: Callable[[], float] | None = None  # set while a loop on simulated time runs (simulated())


def now() -> float:
    """Seconds on the serving clock: time.monotonic, which is what asyncio's loop.time() reads, and on
    uvloop the same CLOCK_MONOTONIC base to the microsecond (uvloop's own time() reads whole
    milliseconds, so a 0.4-ms round trip would be recorded as 0 or 1 ms, and every latency histogram
    would be quantised); a simulated loop's own time while one runs. Not asyncio.get_running_loop():
    on Python 3.11 each call of it is a getpid() system call, and the serving path reads the clock
    ~10 times per query."""
    if _simulated is not None:
        return _simulated()
    return time.monotonic()


@contextlib.contextmanager
def simulated(source: Callable[[], float]) -> Iterator[None]:
    """While inside, ``now()`` reads ``source`` (harness.virtual_loop runs the frontend on simulated time)."""
    global _simulated
    previous, _simulated = _simulated, source
    try:
        yield
    finally:
        _simulated = previous


def timer_slack() -> float:
    """How early a timer set for a ``now()`` time may fire: a due time this close counts as reached
    (otherwise a re-armed timer would spin until the precise time passes)."""
    return MS_TIMER_SLACK_S if isinstance(asyncio.get_running_loop(), _MillisecondLoop) else EXACT_TIMER_SLACK_S
