"""Dynamic batching for a worker: requests queued in one event-loop turn run together through the model,
one batch at a time in a single inference thread, so the event loop never blocks for long; a model whose
batches take under half a millisecond (a small model on the CPU) runs on the loop itself.

Data flow: workers.server (validated inputs) -> **Batcher.submit_nowait / submit** -> model.run_batch -> outputs.
No task and no future per request: a request is a callback, and the next batch starts from a loop callback.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from workers.model import LoadedModel

log = logging.getLogger(__name__)
# A batch that took less than this last time runs on the event loop, which it then holds no longer than
# this (health pings and other connections wait that long at most); a longer one goes back to the thread.
INLINE_MAX_S = 0.0005

# Called once per request: (outputs (B, C), None), or (None, error). CancelledError: the batcher closed
# or the request was no longer wanted; ValueError: the model failed on the batch.
Done = Callable[[np.ndarray | None, BaseException | None], None]


class _Pending:
    __slots__ = ("done", "inputs", "settled", "wanted")

    def __init__(self, inputs: np.ndarray, done: Done, wanted: Callable[[], bool] | None) -> None:
        self.inputs = inputs  # (B, *S) float32
        self.done, self.wanted, self.settled = done, wanted, False

    def settle(self, outputs: np.ndarray | None, exc: BaseException | None) -> None:
        if self.settled:
            return
        self.settled = True
        try:
            self.done(outputs, exc)
        except Exception:  # one request's reply path must not cost the others in its batch
            log.exception("batcher: a request's callback failed")


class Batcher:
    """Runs submitted inputs in batches of up to ``max_batch`` requests; ``start()``, then ``close()``.
    ``slow_factor()`` is read when a batch starts (contention fault injection)."""

    def __init__(self, model: LoadedModel, max_batch: int, slow_factor: Callable[[], float]) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.model, self.max_batch, self.slow_factor = model, max_batch, slow_factor
        self._queue: deque[_Pending] = deque()
        self._scheduled = False                           # a _next call is queued on the loop
        self._running: list[_Pending] | None = None       # the batch now in the inference thread
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self.batches_run = 0
        self.rows_run = 0                  # queries inferred, summed over batches (metrics)
        self.inference_seconds = 0.0       # time spent in the model, summed over batches (metrics)
        self._last_s = float("inf")        # how long the last batch took: the first runs in the thread

    def start(self) -> None:
        """Check that a loop runs (RuntimeError otherwise); batches start from loop callbacks."""
        asyncio.get_running_loop()

    def ensure_started(self) -> None:
        """For hosts that build the batcher outside the event loop (Ray Serve): nothing to start."""
        self.start()

    async def close(self) -> None:
        """Queued requests, and the batch in the thread (which is left to finish), end in CancelledError."""
        self._closed = True
        for pending in [*(self._running or ()), *self._queue]:
            pending.settle(None, asyncio.CancelledError())
        self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def submit_nowait(self, inputs: np.ndarray, done: Done, wanted: Callable[[], bool] | None = None) -> None:
        """Queue inputs (B, *S); ``done`` gets outputs (B, C) once their batch has run. ``wanted()`` is
        asked when the batch is formed: False skips the request (done gets CancelledError)."""
        pending = _Pending(inputs, done, wanted)
        if self._closed:
            pending.settle(None, asyncio.CancelledError())
            return
        self._queue.append(pending)
        self._schedule()

    async def submit(self, inputs: np.ndarray) -> np.ndarray:
        """inputs (B, *S) -> outputs (B, C), once the batch holding them has run."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()

        def done(outputs: np.ndarray | None, exc: BaseException | None) -> None:
            if future.done():
                return
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            elif exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(outputs)  # type: ignore[arg-type]
        self.submit_nowait(inputs, done, lambda: not future.done())  # a cancelled caller is skipped
        return await future

    # -- batches ----------------------------------------------------------------------------------

    def _schedule(self) -> None:
        # On the next loop turn, not now: requests that arrive in this turn join the batch.
        if not self._scheduled and self._running is None and self._queue and not self._closed:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._next)

    def _next(self) -> None:
        self._scheduled = False
        batch = self._take()
        if not batch:
            return
        x = batch[0].inputs if len(batch) == 1 else np.concatenate([p.inputs for p in batch])  # (sum B_i, *S)
        slow = self.slow_factor()
        if slow == 1.0 and self._last_s < INLINE_MAX_S:
            # A small model on the CPU: handing the batch to the thread and back costs several times
            # the inference. A slow (contention) spec applies to batches that start while it holds.
            try:
                y, seconds = _timed(self.model, x, slow)
            except Exception as exc:  # noqa: BLE001 (a model failure: _failed logs it, each request gets it)
                self._failed(batch, exc)
            else:
                self._finished(batch, y, seconds)
            self._schedule()
            return
        self._running = batch
        thread = asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(_timed, self.model, x, slow))
        thread.add_done_callback(functools.partial(self._thread_done, batch))

    def _thread_done(self, batch: list[_Pending], thread: asyncio.Future[tuple[np.ndarray, float]]) -> None:
        self._running = None
        if thread.cancelled():
            return  # the batcher closed; close() settled the batch
        exc = thread.exception()
        if exc is not None:
            self._failed(batch, exc)
        else:
            self._finished(batch, *thread.result())
        self._schedule()

    def _take(self) -> list[_Pending]:
        """Up to max_batch queued requests, skipping those no longer wanted (their connection closed)."""
        batch: list[_Pending] = []
        queue = self._queue
        while queue and len(batch) < self.max_batch:
            pending = queue.popleft()
            if pending.wanted is None or pending.wanted():
                batch.append(pending)
            else:
                pending.settle(None, asyncio.CancelledError())
        return batch

    def _finished(self, batch: list[_Pending], y: np.ndarray, seconds: float) -> None:
        self._last_s = seconds
        self.batches_run += 1
        self.rows_run += len(y)
        self.inference_seconds += seconds
        _scatter(batch, y)

    def _failed(self, batch: list[_Pending], exc: BaseException) -> None:
        """A model failure goes back to each request of the batch as an error reply."""
        log.error("inference failed on a batch of %d requests: %s", len(batch), exc, exc_info=exc)
        _fail(batch, ValueError(f"inference failed: {exc}"))


def _timed(model: LoadedModel, x: np.ndarray, slow: float) -> tuple[np.ndarray, float]:
    """(outputs, seconds the model took): timed where it runs, so a busy loop does not count."""
    t0 = time.perf_counter()
    y = model.run_batch(x, slow)
    return y, time.perf_counter() - t0


def _scatter(batch: list[_Pending], y: np.ndarray) -> None:
    rows = sum(len(p.inputs) for p in batch)
    if y.ndim != 2 or len(y) != rows:
        _fail(batch, ValueError(f"model returned shape {list(y.shape)} for {rows} inputs"))
        return
    if len(batch) == 1:
        batch[0].settle(y, None)
        return
    start = 0
    for pending in batch:  # row slices are views of y: (B_i, C) each
        end = start + len(pending.inputs)
        pending.settle(y[start:end], None)
        start = end


def _fail(batch: list[_Pending], exc: Exception) -> None:
    for pending in batch:
        pending.settle(None, exc)
