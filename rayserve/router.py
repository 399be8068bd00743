"""A Ray Serve request router that sends a call naming a replica to that replica, and reports the
live replicas to the caller's rayserve.directory.

Coding assumes the k data queries of a group and their parity query land on distinct workers:
one slow replica must cost a group one output, not two. Ray's default router (power of two
choices) may put two of them on one replica, so the ingress names the replica of each call
(keyword ``replica``, its unique id) and this router honours it. It runs in the caller's process
(the ingress replica), on Ray's routing event loop.
"""
from __future__ import annotations

from collections.abc import Sequence

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from rayserve.directory import directory_for

PIN = "replica"  # the call's keyword that names its replica


class PinnedRouter(RequestRouter):
    """A pinned call goes to its replica only (or waits for it, should it be at capacity); an
    unpinned call (the ingress's first, which makes Ray create this router) to any replica."""

    def initialize_state(self, directory: str = "") -> None:
        self._directory = directory_for(directory)  # set from RequestRouterConfig.request_router_kwargs

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self._directory.update(r.replica_id.unique_id for r in replicas)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._directory.forget(replica_id.unique_id)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> Sequence[list[RunningReplica]]:
        wanted = pending_request.kwargs.get(PIN) if pending_request is not None else None
        if wanted is None:
            return [candidate_replicas]
        pinned = [r for r in candidate_replicas if r.replica_id.unique_id == wanted]
        if pending_request is not None and not pinned:
            pending_request.routing_context.should_backoff = True  # gone: the client finds out and fails the call
        return [pinned] if pinned else []
