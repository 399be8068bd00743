"""Dynamic batching for a worker: queued infer requests are concatenated and run through the model
one batch at a time in a single inference thread, so the event loop never blocks for long; a model
whose batches take under half a millisecond (a small model on the CPU) runs on the loop itself.

Data flow: workers.server (validated inputs) -> **Batcher.submit** -> model.run_batch -> outputs.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from workers.model import LoadedModel

log = logging.getLogger(__name__)
# A batch that took less than this last time runs on the event loop, which it then holds no longer than
# this (health pings and other connections wait that long at most); a longer one goes back to the thread.
INLINE_MAX_S = 0.0005


@dataclass
class _Pending:
    inputs: np.ndarray  # (B, *S) float32
    future: asyncio.Future[np.ndarray]  # resolves to (B, C)


class Batcher:
    """Runs submitted inputs in batches of up to ``max_batch`` requests; ``start()``, then ``close()``.
    ``slow_factor()`` is read when a batch starts (contention fault injection)."""

    def __init__(self, model: LoadedModel, max_batch: int, slow_factor: Callable[[], float]) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.model, self.max_batch, self.slow_factor = model, max_batch, slow_factor
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self.batches_run = 0
        self.rows_run = 0                  # queries inferred, summed over batches (metrics)
        self.inference_seconds = 0.0       # time spent in the model, summed over batches (metrics)
        self._last_s = float("inf")        # how long the last batch took: the first runs in the thread

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="batcher")

    def ensure_started(self) -> None:
        """Start unless started: for hosts that build the batcher outside the event loop (Ray Serve)."""
        if self._task is None:
            self.start()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, inputs: np.ndarray) -> np.ndarray:
        """inputs (B, *S) -> outputs (B, C), once the batch holding them has run."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(inputs, future))
        return await future

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            x = np.concatenate([p.inputs for p in batch])  # (sum B_i, *S)
            t0 = time.perf_counter()
            try:
                y = await self._run(x, self.slow_factor())  # (sum B_i, C)
            except Exception as exc:  # model failures go back to each request as an error reply
                log.exception("inference failed on a batch of %d", len(x))
                _fail(batch, ValueError(f"inference failed: {exc}"))
                continue
            self._last_s = time.perf_counter() - t0
            self.batches_run += 1
            self.rows_run += len(x)
            self.inference_seconds += self._last_s
            _scatter(batch, y)

    async def _run(self, x: np.ndarray, slow: float) -> np.ndarray:
        """One batch: on the loop itself when the last one took under INLINE_MAX_S (a small model on the
        CPU, where handing the batch to the thread and back costs several times the inference), else in
        the inference thread. A slow (contention) spec applies to the batches that start while it holds."""
        if slow == 1.0 and self._last_s < INLINE_MAX_S:
            return self.model.run_batch(x, slow)
        run = functools.partial(self.model.run_batch, x, slow)
        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def _next_batch(self) -> list[_Pending]:
        """Wait for one request, then take whatever else is queued, up to max_batch requests."""
        first = await self._queue.get()
        await asyncio.sleep(0)  # let handlers already scheduled in this loop turn enqueue too
        batch = [first]
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return [p for p in batch if not p.future.done()]  # skip requests whose connection closed


def _scatter(batch: list[_Pending], y: np.ndarray) -> None:
    rows = sum(len(p.inputs) for p in batch)
    if y.ndim != 2 or len(y) != rows:
        _fail(batch, ValueError(f"model returned shape {list(y.shape)} for {rows} inputs"))
        return
    offsets = np.cumsum([len(p.inputs) for p in batch])[:-1]
    for pending, out in zip(batch, np.split(y, offsets)):
        if not pending.future.done():
            pending.future.set_result(out)


def _fail(batch: list[_Pending], exc: Exception) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
