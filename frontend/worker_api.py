"""The worker-client interface the pool, the dispatcher and the metrics use; WorkerClient (parm
workers) and V2WorkerClient (Open Inference Protocol servers) both implement it via WorkerBase."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from frontend.balance import PeakEwma
from frontend.errors import WorkerError

# an inference's outcome, called once: (outputs (B, C), None) or (None, the WorkerError)
InferDone = Callable[[np.ndarray | None, WorkerError | None], None]


class Abandonable(Protocol):
    def abandon(self) -> None:
        """The caller no longer wants the reply (the worker may still be working on it)."""


class Worker(Protocol):
    role: str                     # "data", "parity" or "control"
    host: str
    port: int
    info: dict[str, Any]          # what the worker reports about its model: name, model_id, input_shape, ...
    info_stale: bool              # info is from before the connection was last lost: it may serve another model now
    connected_since: float | None  # clock.now() time the current connection was established (None: not connected)
    refused: str | None           # set by the pool when this worker's model disagrees with the deployment's
    auth_error: str | None        # why the last handshake failed, if it did
    last_answer: float            # clock.now() time of the last inference result (-inf: none yet)
    answered: int                 # replies received, and their summed round trip (metrics)
    latency_sum: float
    pace: PeakEwma                # seconds per request, from recent replies (the pool's choice)
    on_change: Callable[[], None] | None  # called when info is refreshed or goes stale (model agreement)

    @property
    def name(self) -> str: ...
    @property
    def connected(self) -> bool: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def in_flight(self) -> int: ...

    def start(self) -> None: ...
    async def close(self) -> None: ...
    async def wait_connected(self, timeout: float) -> bool: ...
    async def infer(self, inputs: np.ndarray) -> np.ndarray: ...
    def send_infer(self, inputs: np.ndarray, done: InferDone) -> Abandonable:
        """Send an inference now (WorkerUnavailable at once if it cannot be sent); ``done`` is called
        once with its outcome, unless the returned request is abandoned first."""
    async def ping(self) -> dict[str, Any]: ...
    async def set_fault(self, spec: str) -> None: ...
