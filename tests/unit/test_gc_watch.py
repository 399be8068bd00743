"""GcWatch counts the collector's pauses per generation (for /stats) and leaves gc.callbacks as it
found them; processes' longest pauses merge by max, their counts by sum."""
from __future__ import annotations

import gc

from frontend.gc_watch import GcWatch
from frontend.peers import merge_stats


def test_full_collections_are_counted_and_timed_and_the_callback_removed() -> None:
    watch = GcWatch()
    before = list(gc.callbacks)
    watch.start()
    watch.start()  # idempotent
    try:
        for _ in range(3):
            a: list = []
            a.append(a)  # a cycle: only the collector frees it
            del a
            gc.collect(2)
    finally:
        watch.stop()
    assert gc.callbacks == before
    flat = watch.flat()
    assert flat["gc_full_collections"] == 3 and flat["gc_collections"] >= 3
    assert 0 < flat["gc_max_pause_ms"] <= flat["gc_pause_ms"]
    gc.collect(2)
    assert watch.flat()["gc_full_collections"] == 3  # stopped: no longer counting


def test_longest_pause_merges_by_max_and_counts_by_sum() -> None:
    merged = merge_stats({"gc_max_pause_ms": 4.0, "gc_pause_ms": 10.0}, 0,
                         [(1, {"gc_max_pause_ms": 9.0, "gc_pause_ms": 5.0}), (2, None)])
    assert merged["gc_max_pause_ms"] == 9.0 and merged["gc_pause_ms"] == 15.0
