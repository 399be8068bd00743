"""The frontend process's garbage-collection pauses, which stall its event loop (a full collection of
a bare frontend's ~45,000 objects takes ~20 ms on a small machine, and every query in flight waits).
``GcWatch`` times each collection (gc.callbacks) for /stats and /metrics; ``freeze_startup_heap``
moves what start-up allocated out of the collector's way (gc.freeze), as ``parm serve`` does once
it is listening, so a full collection scans only what serving has allocated since.
"""
from __future__ import annotations

import gc
import time
from typing import Any


class GcWatch:
    """Collections and their pause times, per generation; installed by ``start``, removed by ``stop``."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.pause_s = [0.0, 0.0, 0.0]
        self.max_pause_s = [0.0, 0.0, 0.0]
        self._t0: float | None = None

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        if self._t0 is None:
            return
        pause, gen = time.perf_counter() - self._t0, int(info.get("generation", 0))
        self._t0 = None
        self.collections[gen] += 1
        self.pause_s[gen] += pause
        self.max_pause_s[gen] = max(self.max_pause_s[gen], pause)

    def flat(self) -> dict[str, float]:
        """/stats' view: collections and pause totals (ms) over all generations, the full (generation 2)
        ones apart, and the longest pause (``max_``: merged across processes by max, frontend.peers)."""
        return {"gc_collections": sum(self.collections), "gc_full_collections": self.collections[2],
                "gc_pause_ms": round(1000 * sum(self.pause_s), 3), "gc_full_pause_ms": round(1000 * self.pause_s[2], 3),
                "gc_max_pause_ms": round(1000 * max(self.max_pause_s), 3), "gc_frozen_objects": gc.get_freeze_count()}


def freeze_startup_heap() -> int:
    """Collect once, then freeze every object alive now (modules, the app, worker clients): they are
    never scanned again. Only for a serving process (a test process creating many apps would leak
    what each froze). Returns the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
