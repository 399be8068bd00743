"""Fault injection on Ray: a board (a small named actor per application) holding a fault spec
(workers.faults grammar) for each replica of a model deployment, addressed by the replica's rank.

Replicas poll it (``FaultFollower``), so it reaches every replica whatever routes the queries
(the frontend's pinned calls or Ray's own router) and survives a replica's replacement: the new
replica takes the dead one's rank, and its spec. The harness (rayserve.bench) and tests write it.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from workers.faults import FaultInjector, parse

log = logging.getLogger(__name__)
POLL_S = 0.05
NAMESPACE = "serve"


@ray.remote(num_cpus=0)
class FaultBoard:
    """(deployment, rank) -> spec; "none" where nothing was set."""

    def __init__(self) -> None:
        self.specs: dict[tuple[str, int], str] = {}

    def set(self, deployment: str, rank: int, spec: str) -> str:
        parse(spec)  # ValueError for a bad spec, raised to the caller
        self.specs[(deployment, rank)] = spec
        return spec

    def get(self, deployment: str, rank: int) -> str:
        return self.specs.get((deployment, rank), "none")

    def clear(self) -> None:
        self.specs.clear()


def board(app_name: str) -> Any:
    """The application's board, created by whichever party asks first."""
    return FaultBoard.options(name=f"parm-faults:{app_name}", namespace=NAMESPACE, get_if_exists=True,
                              lifetime="detached").remote()


class FaultFollower:
    """Keeps one replica's FaultInjector at the board's spec for (deployment, rank)."""

    def __init__(self, app_name: str, deployment: str, rank: int, faults: FaultInjector) -> None:
        self.app_name, self.deployment, self.rank, self.faults = app_name, deployment, rank, faults
        self.seen = "none"
        self._task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        handle = board(self.app_name)
        while True:
            try:
                spec = await handle.get.remote(self.deployment, self.rank)
            except ray.exceptions.RayError as exc:  # the board was removed: ask again for it
                log.debug("fault board unreachable: %r", exc)
                handle = board(self.app_name)
                spec = self.seen
            if spec != self.seen:  # only changes: a spec set by a pinned set_fault call stays otherwise
                self.seen = spec
                self.faults.set(spec)
                log.info("fault spec of %s rank %d set to %r", self.deployment, self.rank, spec)
            await asyncio.sleep(POLL_S)
