"""The rules every worker client shares, whatever its transport: the health verdict (at most one
real-inference probe in flight, and the busy-worker rule), answer bookkeeping, abandoned requests
counted as load until answered, and ownership of every task the client starts."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np

from frontend import clock
from frontend.balance import PeakEwma
from frontend.errors import WorkerError, WorkerFailed, WorkerUnavailable
from frontend.worker_api import Abandonable, InferDone

log = logging.getLogger(__name__)
T = TypeVar("T")
MIN_RETRY_S = 0.05  # first retry of a probe while the worker cannot be reached; doubles up to the interval


class WorkerBase:
    """Implements frontend.worker_api.Worker but for the transport. Subclasses provide ``name``,
    ``infer``, ``ping``, ``set_fault`` and ``_probe_once`` (optionally ``_start_transport``,
    ``_close_transport``, ``_wait_transport``, ``in_flight``), and report what the transport sees:
    ``_mark_connected`` / ``_mark_disconnected``, ``_set_info`` with each fresh model info,
    ``_record_reply`` for each reply and ``_record_result`` for each well-formed inference result."""

    host: str
    port: int

    def __init__(self, role: str, *, connect_timeout_s: float, health_interval_s: float,
                 health_timeout_s: float) -> None:
        self.role = role
        self.connect_timeout_s = connect_timeout_s
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.info: dict[str, Any] = {}          # the worker's model: name, model_id, input_shape, ...
        self.info_stale = False                  # info predates the last lost connection
        self.connected_since: float | None = None
        self.probe_ok = False                    # the last probe passed in time, or results keep arriving
        self.refused: str | None = None          # set by the pool when this worker must not be used
        self.auth_error: str | None = None       # why the last handshake failed, if it did
        self.last_answer = float("-inf")         # clock.now() time of the last inference result
        self.answered = 0                        # replies received, and their summed round trip (metrics)
        self.latency_sum = 0.0
        self.pace = PeakEwma()                   # seconds per request, as recent replies show (frontend.balance)
        self.on_change: Callable[[], None] | None = None  # info refreshed or stale: the pool re-judges agreement
        self._connected = asyncio.Event()      # to wait on; _up mirrors it for the hot path's reads
        self._up = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._probe_task: asyncio.Task[bool] | None = None
        self._outstanding = 0                    # requests run by _until_answered and not yet answered
        self._closing = False

    # -- state ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        return self._up

    @property
    def healthy(self) -> bool:
        return self._up and self.probe_ok and self.refused is None

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered by the worker, including those whose caller gave up
        (a cancelled straggler): the worker still holds them, so least-loaded choice counts them."""
        return self._outstanding

    def answered_recently(self) -> bool:
        return clock.now() - self.last_answer < 2 * max(self.health_interval_s, self.health_timeout_s)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._start_transport()
        self._spawn(self._probe_loop())

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_transport()

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connected

    # -- the transport's side -----------------------------------------------------------------

    async def infer(self, inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def send_infer(self, inputs: np.ndarray, done: InferDone) -> Abandonable:
        """Callback form of ``infer`` (frontend.worker_api.Worker.send_infer); this generic one runs
        ``infer`` in a task of its own, cancelled by ``abandon()``. Transports that can match replies
        to callbacks directly override it (frontend.worker_client)."""
        if self._closing or not self.connected:
            raise WorkerUnavailable(f"{self.name}: not connected")
        task = self._spawn(self._infer_then(inputs, done))
        return _TaskRequest(task)

    async def _infer_then(self, inputs: np.ndarray, done: InferDone) -> None:
        try:
            outputs = await self.infer(inputs)
        except WorkerError as exc:
            done(None, exc)
        except Exception as exc:  # a transport's unexpected error fails this request (re-sent), never hangs it
            log.exception("%s: inference failed unexpectedly", self.name)
            done(None, WorkerFailed(f"{self.name}: {type(exc).__name__}: {exc}"))
        else:
            done(outputs, None)

    async def ping(self) -> dict[str, Any]:
        raise NotImplementedError

    async def set_fault(self, spec: str) -> None:
        raise NotImplementedError

    async def _probe_once(self) -> bool:
        """Refresh the model info (``_set_info``) and run one real inference; True if it passed."""
        raise NotImplementedError

    def _start_transport(self) -> None:
        """Start what keeps the transport up (e.g. a connection loop), via ``_spawn``."""

    async def _close_transport(self) -> None:
        """Release the transport once every task is done."""

    async def _wait_transport(self) -> None:
        """Return once a probe can be sent (e.g. when connected)."""

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)  # strong reference until done; close() cancels and awaits it
        task.add_done_callback(self._tasks.discard)
        return task

    def _mark_connected(self) -> None:
        if not self._connected.is_set():
            self.connected_since = clock.now()
            self._connected.set()
            self._up = True

    def _mark_disconnected(self) -> None:
        """Out of rotation until a probe passes again; by then the worker may serve another model
        (a restart), so its info is stale and the busy rule forgets the old connection's results."""
        self._connected.clear()
        self._up = False
        self.connected_since = None
        self.probe_ok = False
        self.last_answer = float("-inf")
        if self.info and not self.info_stale:
            self.info_stale = True
            self._changed()

    def _set_info(self, info: dict[str, Any]) -> None:
        self.info, self.info_stale = info, False
        self._changed()  # judged before the probe's inference can put the worker in rotation

    def _changed(self) -> None:
        if self.on_change is not None and not self._closing:
            self.on_change()

    def _record_reply(self, t0: float, ahead: int = 0, inference: bool = True) -> None:
        """A reply arrived for a request sent at clock.now() ``t0`` with ``ahead`` requests before it,
        whether or not its caller still waited (an abandoned straggler's reply is the slow news).
        Only inference replies set the pace: a ping is answered at once, however slow the model."""
        now = clock.now()
        self.answered += 1
        self.latency_sum += now - t0
        if inference:
            self.pace.observe((now - t0) / (1 + max(ahead, 0)), now)

    def _record_result(self) -> None:
        """A well-formed inference result arrived (the busy rule's proof of life)."""
        self.last_answer = clock.now()

    async def _until_answered(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one request to its reply even if the caller gives up, counted in ``in_flight``
        until then (a transport whose requests would otherwise end with their caller)."""
        if self._closing:
            coro.close()
            raise WorkerUnavailable(f"{self.name}: client closed")
        task = self._spawn(self._counted(coro))
        task.add_done_callback(_read_outcome)
        await asyncio.wait({task})  # a cancelled caller stops waiting here; the request runs on
        if task.cancelled():  # close() cancelled it
            raise WorkerUnavailable(f"{self.name}: client closed")
        return task.result()

    async def _counted(self, coro: Coroutine[Any, Any, T]) -> T:
        self._outstanding += 1
        try:
            return await coro
        finally:
            self._outstanding -= 1

    # -- health -----------------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        """A probe each interval; quick retries while the worker cannot be reached."""
        retry = MIN_RETRY_S
        while not self._closing:
            await self._wait_transport()
            ok = await self._probe()
            # A busy worker's probe waits behind its queue and may time out while real results keep
            # arriving: those count as proof of health too (a stalled worker has neither).
            self.probe_ok = self.connected and (ok or self.answered_recently())
            if self.connected:
                retry, delay = MIN_RETRY_S, self.health_interval_s
            else:
                retry, delay = retry * 2, min(retry, self.health_interval_s)
            await asyncio.sleep(delay)

    async def _probe(self) -> bool:
        """True if a probe passed within the health timeout. At most one is in flight: while the
        last is outstanding none is sent (a stalled worker would otherwise hold one per interval,
        all released at once when it heals) and the verdict is False, the outstanding one being
        older than the timeout already."""
        last = self._probe_task
        if last is not None:
            if not last.done():
                return False
            last.result()  # answered late: counted by the busy rule; a bug in it surfaces here
        task = self._probe_task = self._spawn(self._guarded_probe())
        done, _ = await asyncio.wait({task}, timeout=self.health_timeout_s)
        if not done:
            log.debug("%s: probe unanswered after %.2f s", self.name, self.health_timeout_s)
            return False
        self._probe_task = None
        return task.result()

    async def _guarded_probe(self) -> bool:
        try:
            return await self._probe_once()
        except (WorkerError, OSError, asyncio.TimeoutError) as exc:
            log.debug("%s: probe failed: %r", self.name, exc)
            return False


class _TaskRequest:
    """A generic ``send_infer``'s request: abandoning it cancels its task (the caller stops waiting)."""

    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task

    def abandon(self) -> None:
        self.task.cancel()


def _read_outcome(task: asyncio.Task[Any]) -> None:
    """Read an abandoned request's outcome, so asyncio does not report its error as unretrieved."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("abandoned request ended with %r", task.exception())
