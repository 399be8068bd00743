"""The serving path's one clock: the running event loop's. Every send time, round trip, due time
and timer of the frontend reads it, so ``parm simulate`` runs the same code on a loop whose clock
is simulated (harness.virtual_loop). CPU-cost counters (encode/decode seconds) keep perf_counter.
"""
from __future__ import annotations

import asyncio


def now() -> float:
    """Seconds on the running loop's clock (time.monotonic on a real loop)."""
    return asyncio.get_running_loop().time()
