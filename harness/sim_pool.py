"""The simulator's copy of frontend.pool.WorkerPool.pick: least-loaded healthy worker (fewest
requests in flight), ties round-robin, avoiding a given set; O(log n) per pick with a min segment tree.

Ties: the real pool rotates the list of *fresh* (healthy, not avoided) workers by a shared counter
and takes the first minimum; here the rotation start is ``counter % pool size`` over all the pool's
workers. The two agree exactly when every worker is healthy and nothing is avoided.
"""
from __future__ import annotations

from collections.abc import Iterable

INF = float("inf")


class Counter:
    """The pool's round-robin counter, shared by data and parity picks as in the real pool."""

    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value - 1


class LeastLoaded:
    """Workers ``ids`` (global worker numbers) with their frontend in-flight counts and health."""

    def __init__(self, ids: list[int], counter: Counter) -> None:
        self.ids = ids
        self.index = {w: i for i, w in enumerate(ids)}
        self.counter = counter
        self.in_flight = [0] * len(ids)
        self.healthy = [True] * len(ids)
        size = 1
        while size < max(len(ids), 1):
            size *= 2
        self.size = size
        self.tree: list[float] = [INF] * (2 * size)
        for i in range(len(ids)):
            self.tree[size + i] = 0
        for j in range(size - 1, 0, -1):
            self.tree[j] = min(self.tree[2 * j], self.tree[2 * j + 1])

    def __contains__(self, worker: int) -> bool:
        return worker in self.index

    def _set(self, i: int, value: float) -> None:
        tree = self.tree
        j = self.size + i
        tree[j] = value
        j >>= 1
        while j:
            a, b = tree[2 * j], tree[2 * j + 1]
            m = a if a < b else b  # noqa: FURB136 -- hot path: cheaper than min()
            if tree[j] == m:
                break  # nothing above changes
            tree[j] = m
            j >>= 1

    def _refresh(self, i: int) -> None:
        self._set(i, self.in_flight[i] if self.healthy[i] else INF)

    def add(self, worker: int, delta: int) -> None:
        """A request was sent to (+1) or left (-1) ``worker`` as the frontend sees it."""
        i = self.index[worker]
        self.in_flight[i] += delta
        self._refresh(i)

    def set_healthy(self, worker: int, healthy: bool) -> None:
        i = self.index[worker]
        self.healthy[i] = healthy
        self._refresh(i)

    def _first_at_most(self, start: int, bound: float) -> int:
        """First leaf index >= start whose value is <= bound, or -1."""
        tree, size = self.tree, self.size
        j = size + start
        while True:
            if tree[j] <= bound:
                while j < size:
                    j = 2 * j if tree[2 * j] <= bound else 2 * j + 1
                return j - size
            while j & 1:  # climb while a right child: the next subtree to the right is j + 1
                j >>= 1
            if j == 0:
                return -1
            j += 1

    def pick(self, avoid: Iterable[int] = ()) -> int | None:
        """Least-loaded healthy worker, preferring those not in ``avoid``; None if none is healthy."""
        if self.tree[1] == INF:
            return None
        hidden = [self.index[w] for w in avoid if w in self.index and self.healthy[self.index[w]]]
        for i in hidden:
            self._set(i, INF)
        if self.tree[1] == INF:  # every healthy worker is avoided: the real pool falls back to all of them
            for i in hidden:
                self._refresh(i)
            hidden = []
        bound = self.tree[1]
        start = self.counter.next() % len(self.ids)
        i = self._first_at_most(start, bound)
        if i < 0:
            i = self._first_at_most(0, bound)
        for h in hidden:
            self._refresh(h)
        return self.ids[i]
