"""Fault injection on Ray: a board (a small named actor per application) holding a fault spec
(workers.faults grammar) for each replica of a model deployment, addressed by the replica's rank.

Replicas follow it (``FaultFollower``, one long-polling call at a time), so it reaches every
replica whatever routes the queries (the frontend's pinned calls or Ray's own router) and survives
a replica's replacement: the new replica takes the dead one's rank, and its spec. Replicas also
register their actor, so the harness can kill one by rank (a plan's crash). The harness
(rayserve.bench) and tests write it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import ray

from workers.faults import FaultInjector, parse

log = logging.getLogger(__name__)
WAIT_S = 30.0   # a follower's call returns at least this often (so a lost board is noticed)
RETRY_S = 0.5
POLL_S = 0.05   # how soon a set spec reaches its replica, at most (a test's wait)
NAMESPACE = "serve"


@ray.remote(num_cpus=0)
class FaultBoard:
    """(deployment, rank) -> spec; "none" where nothing was set. An async actor: ``wait`` holds a
    follower's call until its spec changes, so an idle board costs nothing."""

    def __init__(self) -> None:
        self.specs: dict[tuple[str, int], str] = {}
        self.actors: dict[tuple[str, int], Any] = {}  # each rank's replica actor, as it registered
        self.changed = asyncio.Event()

    async def register(self, deployment: str, rank: int, actor: Any) -> None:
        """A replica says it holds ``rank`` (a replacement overwrites the dead one)."""
        self.actors[(deployment, rank)] = actor

    async def kill(self, deployment: str, rank: int) -> bool:
        """Kill the replica actor of ``rank`` outright, as a crashed process; Ray Serve then starts
        another (which takes the rank). False when no replica registered it."""
        actor = self.actors.pop((deployment, rank), None)
        if actor is None:
            return False
        ray.kill(actor, no_restart=True)
        return True

    async def set(self, deployment: str, rank: int, spec: str) -> str:
        parse(spec)  # ValueError for a bad spec, raised to the caller
        self.specs[(deployment, rank)] = spec
        self._notify()
        return spec

    async def get(self, deployment: str, rank: int) -> str:
        return self.specs.get((deployment, rank), "none")

    async def wait(self, deployment: str, rank: int, seen: str, timeout_s: float = WAIT_S) -> str:
        """The spec of (deployment, rank) once it differs from ``seen``, or after ``timeout_s``."""
        end = asyncio.get_running_loop().time() + timeout_s
        while (spec := self.specs.get((deployment, rank), "none")) == seen:
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return spec

    async def clear(self) -> None:
        self.specs.clear()
        self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()  # waiters woken by the old event re-check and wait on this one


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
        with contextlib.suppress(ray.exceptions.RayError):
            await handle.register.remote(self.deployment, self.rank, ray.get_runtime_context().current_actor)
        while True:
            try:
                spec = await handle.wait.remote(self.deployment, self.rank, self.seen)
            except ray.exceptions.RayError as exc:  # the board was removed: ask again for it
                log.debug("fault board unreachable: %r", exc)
                await asyncio.sleep(RETRY_S)
                handle = board(self.app_name)
                continue
            if spec != self.seen:  # only changes: a spec set by a pinned set_fault call stays otherwise
                self.seen = spec
                self.faults.set(spec)
                log.info("fault spec of %s rank %d set to %r", self.deployment, self.rank, spec)
