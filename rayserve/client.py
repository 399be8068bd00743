"""The frontend's worker client for one slot of a Ray Serve model deployment.

Implements frontend.worker_api.Worker (via WorkerBase, so health, probes and the busy rule are
the native frontend's): the pool, dispatcher, coders and decode policy run unchanged on top.
Each call is pinned to the slot's replica (rayserve.router); a replica Ray replaces is seen as
a worker that restarted. Unlike a parm worker's request, a call whose caller gives up (a
straggler once its group is decoded) is cancelled on the replica too.
"""
from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import numpy as np
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import RequestCancelledError

from frontend import clock
from frontend.errors import WorkerFailed, WorkerUnavailable
from frontend.worker_base import WorkerBase
from rayserve.directory import ReplicaDirectory
from rayserve.router import PIN

WATCH_S = 0.05  # how often a slot checks which replica it stands for


class RayReplicaClient(WorkerBase):
    """Slot ``slot`` of the deployment behind ``handle``; ``host:port`` reads ``ray:NAME:slot``.
    Not ``pinned``: the one slot stands for the whole deployment, and Ray's router picks each
    call's replica (equal resources as Ray Serve users run it)."""

    def __init__(self, handle: Any, deployment: str, directory: ReplicaDirectory, slot: int, role: str,
                 pinned: bool = True, **opts: float) -> None:
        super().__init__(role, **opts)
        self.handle, self.directory, self.slot, self.pinned = handle, directory, slot, pinned
        self.host, self.port = f"ray:{deployment}", slot
        self.replica: str | None = None
        self._calls: dict[str, set[Any]] = {}  # replica id -> its responses not yet answered

    @property
    def name(self) -> str:
        return f"{self.host}:{self.slot} ({self.replica or 'no replica'})"

    # -- transport ----------------------------------------------------------------------------

    def _start_transport(self) -> None:
        self._spawn(self._watch())

    async def _wait_transport(self) -> None:
        await self._connected.wait()

    async def _watch(self) -> None:
        """Follow the slot's binding: a new replica is a new connection, a lost one a lost connection
        (its calls still waiting are cancelled, and fail as WorkerUnavailable)."""
        if not self.pinned:
            self.replica = "any replica"
            self._mark_connected()  # health is the probes' to judge, through Ray's routing
            return
        while True:
            bound = self.directory.replica_of(self.slot)
            if bound != self.replica:
                if self.replica is not None:
                    self._mark_disconnected()
                    for response in self._calls.pop(self.replica, ()):
                        response.cancel()
                self.replica = bound
                if bound is not None:
                    self._mark_connected()
            await asyncio.sleep(WATCH_S)

    async def _call(self, method: str, *args: Any) -> Any:
        replica = self.replica
        if self.pinned and (replica is None or not self.directory.is_live(replica)):
            raise WorkerUnavailable(f"{self.name}: replica not running")
        pin = {PIN: replica} if self.pinned else {}
        # A fresh context: the call is no HTTP request's child. Inherited, the request's internal id
        # would be shared by calls to distinct replicas, and Ray's router hands a chosen replica
        # to the first pending call with that id, breaking the pinning.
        response = contextvars.Context().run(getattr(self.handle, method).remote, *args, **pin)
        calls = self._calls.setdefault(replica, set())
        calls.add(response)
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()  # the caller gave up (an answered group): the replica drops it too
            raise
        except RequestCancelledError:  # cancelled by _watch: the replica went away
            raise WorkerUnavailable(f"{self.name}: replica {replica} lost") from None
        except (RayActorError, ActorUnavailableError) as exc:
            if self.pinned:
                self.directory.forget(replica)
            raise WorkerUnavailable(f"{self.name}: replica {replica} died: {type(exc).__name__}") from None
        except RayTaskError as exc:
            cause = repr(exc.cause) if exc.cause is not None else str(exc)
            raise WorkerFailed(f"{self.name}: {cause}") from None
        finally:
            calls.discard(response)

    # -- the Worker surface ---------------------------------------------------------------------

    async def infer(self, inputs: np.ndarray) -> np.ndarray:
        t0 = clock.now()
        outputs = await self._counted(self._call("infer", inputs))
        self._record_reply(t0)
        if not isinstance(outputs, np.ndarray) or outputs.ndim != 2 or len(outputs) != len(inputs):
            raise WorkerFailed(f"{self.name}: malformed result for {len(inputs)} inputs")
        self._record_result()
        return outputs

    async def ping(self) -> dict[str, Any]:
        return dict(await self._call("info"))

    async def set_fault(self, spec: str) -> None:
        try:
            await self._call("set_fault", spec)
        except WorkerFailed as exc:
            raise ValueError(str(exc)) from None

    async def _probe_once(self) -> bool:
        info = await self._call("info")
        self._set_info(dict(info))
        shape = info.get("input_shape")
        if not isinstance(shape, list):
            return False
        outputs = await self.infer(np.zeros((1, *shape), np.float32))
        return outputs.shape[0] == 1
