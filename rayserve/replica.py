"""A model replica as a Ray Serve deployment: the same model loading, dynamic batching and fault
injection as ``parm worker`` (workers.model, workers.batcher, workers.faults), reached through a
DeploymentHandle instead of the parm wire protocol.

Data flow: ingress (rayserve.client) -> [Ray, pinned by rayserve.router] -> **ModelReplica.infer**
-> faults -> batcher -> model. A ``crash`` fault exits the replica's process, and Ray Serve
starts a new replica in its place.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from rayserve.faults import FaultFollower
from workers.batcher import Batcher
from workers.faults import FaultInjector, InjectedDrop
from workers.model import load_model, parse_service_time
from workers.server import check_inputs


class WrongReplica(RuntimeError):
    """A call pinned to another replica reached this one: the router is broken, and answering
    would break the independence coding relies on."""


class ModelReplica:
    """Serves one model (a parm checkpoint, a ``.pt2``, or ``builtin:...``) to pinned calls."""

    def __init__(self, model: str, max_batch: int = 32, service_time: str | None = None,
                 device: str = "cpu", fault_board: str | None = None) -> None:
        """``fault_board``: the application whose fault board (rayserve.faults) this replica follows."""
        from ray import serve

        self.model = load_model(model, device)
        if service_time:  # every batch takes this long in total, as parm worker --service-time
            self.model.batch_time = parse_service_time(service_time)
            self.model.info["service_time"] = service_time
        context = serve.get_replica_context()
        self.replica_id, self.rank = context.replica_id.unique_id, context.rank.rank
        self.faults = FaultInjector()
        self.batcher = Batcher(self.model, max_batch, lambda: self.faults.slow_factor)
        self.follower = None if fault_board is None else FaultFollower(
            fault_board, context.deployment, self.rank, self.faults)
        self.requests_served = 0
        with contextlib.suppress(RuntimeError):  # no running loop here: started by the first call
            self._start()

    def _start(self) -> None:
        self.batcher.ensure_started()
        if self.follower is not None:
            self.follower.ensure_started()

    async def infer(self, inputs: np.ndarray, replica: str | None = None) -> np.ndarray:
        """inputs float32 (B, *input_shape) -> outputs float32 (B, C)."""
        self._check_pin(replica)
        inputs = check_inputs(np.asarray(inputs), tuple(self.model.input_shape))
        self._start()
        try:
            await self.faults.before_request()
        except InjectedDrop as exc:  # no connection to drop on Ray: the call fails instead
            raise ConnectionError(str(exc)) from None
        outputs = await self.batcher.submit(inputs)
        self.requests_served += 1
        return outputs

    async def info(self, replica: str | None = None) -> dict[str, Any]:
        """The model's info as a parm worker reports it, plus this replica's id and fault."""
        self._check_pin(replica)
        self._start()
        return {**self.model.info, "replica": self.replica_id, "rank": self.rank, "pid": os.getpid(),
                "fault": self.faults.spec,
                "requests_served": self.requests_served}

    async def set_fault(self, spec: str, replica: str | None = None) -> str:
        """Install a fault spec (workers.faults grammar); ValueError for a bad one."""
        self._check_pin(replica)
        self.faults.set(spec)
        return self.faults.spec

    def _check_pin(self, replica: str | None) -> None:
        if replica is not None and replica != self.replica_id:
            raise WrongReplica(f"call for replica {replica} reached replica {self.replica_id}")
