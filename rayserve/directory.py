"""Which Ray Serve replica each of the frontend's worker slots stands for.

The request router of a deployment's handle (rayserve.router) reports the live replicas here;
the ingress's worker clients (rayserve.client) read their slot's replica. A slot keeps its
replica while that replica lives; a replica Ray starts in place of a dead one takes the freed
slot, so to the frontend a replaced replica looks like a worker that restarted. Thread-safe:
Ray may run the router on its own event loop thread.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable


class ReplicaDirectory:
    """One deployment's live replicas (by Ray's unique replica id) and its slot binding."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: frozenset[str] = frozenset()
        self._slots: list[str | None] = []
        self.updates = 0  # reports received from the router (0: the router has not reported yet)

    def configure(self, slots: int) -> None:
        """Use ``slots`` slots (the deployment's replica count); replicas beyond them stay unused."""
        if slots < 1:
            raise ValueError("a deployment needs at least one slot")
        with self._lock:
            self._slots = (self._slots + [None] * slots)[:slots]
            self._bind()

    def update(self, replica_ids: Iterable[str]) -> None:
        """The router's report: exactly these replicas are live now."""
        with self._lock:
            self._live = frozenset(replica_ids)
            self.updates += 1
            self._bind()

    def forget(self, replica_id: str) -> None:
        """A call found ``replica_id`` dead before the router's next report: unbind it now."""
        with self._lock:
            self._live = self._live - {replica_id}
            self._bind()

    def replica_of(self, slot: int) -> str | None:
        with self._lock:
            return self._slots[slot] if slot < len(self._slots) else None

    def is_live(self, replica_id: str) -> bool:
        return replica_id in self._live  # a frozenset swapped whole: safe to read unlocked

    @property
    def live(self) -> frozenset[str]:
        return self._live

    def _bind(self) -> None:
        """Unbind dead replicas, then give free slots to unbound live ones (in id order, so the
        binding does not depend on the order Ray lists them)."""
        self._slots = [rid if rid in self._live else None for rid in self._slots]
        unbound = sorted(self._live - set(self._slots))
        for i, rid in enumerate(self._slots):
            if rid is None and unbound:
                self._slots[i] = unbound.pop(0)


_DIRECTORIES: dict[str, ReplicaDirectory] = {}
_REGISTRY_LOCK = threading.Lock()


def directory_for(key: str) -> ReplicaDirectory:
    """The process-wide directory of deployment ``key`` (router and clients meet here)."""
    with _REGISTRY_LOCK:
        found = _DIRECTORIES.get(key)
        if found is None:
            found = _DIRECTORIES[key] = ReplicaDirectory()
        return found
