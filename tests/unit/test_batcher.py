"""workers.batcher: batches of a model that answers in well under a millisecond run on the event loop
(after a first one in the inference thread, which measures it); a slower model, or any batch under a
slow (contention) fault, runs in the thread, so the loop is never held long."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from workers.batcher import INLINE_MAX_S, Batcher
from workers.model import LoadedModel


def _model(seconds: float, threads: list[int]) -> LoadedModel:
    def predict(x: np.ndarray) -> np.ndarray:
        threads.append(threading.get_ident())
        if seconds:
            time.sleep(seconds)
        return np.zeros((len(x), 2), np.float32)
    return LoadedModel(predict, (1,), 2, {})


async def _run(model: LoadedModel, n: int, slow: float = 1.0) -> None:
    batcher = Batcher(model, max_batch=4, slow_factor=lambda: slow)
    batcher.start()
    try:
        for _ in range(n):
            out = await batcher.submit(np.zeros((1, 1), np.float32))
            assert out.shape == (1, 2)
    finally:
        await batcher.close()


async def test_a_fast_model_runs_on_the_loop_after_its_first_batch() -> None:
    threads: list[int] = []
    await _run(_model(0.0, threads), 10)
    loop_thread = threading.get_ident()
    # the first measures it; the thread's start-up may make the second go there too, and a batch that a
    # busy machine stretches past the limit sends the next one back: most run on the loop all the same
    assert threads[0] != loop_thread and threads[1:].count(loop_thread) >= 6, threads


async def test_a_slow_model_and_a_slowed_batch_stay_in_the_thread() -> None:
    threads: list[int] = []
    await _run(_model(2 * INLINE_MAX_S, threads), 3)
    await _run(_model(0.0, threads), 3, slow=2.0)
    assert threading.get_ident() not in threads


def _echo_model(batches: list[int]) -> LoadedModel:
    """Row i of the output is (x_i, x_i): a request can tell its own rows apart from its neighbours'."""
    def predict(x: np.ndarray) -> np.ndarray:
        batches.append(len(x))
        return np.repeat(x.reshape(len(x), 1), 2, axis=1)
    return LoadedModel(predict, (1,), 2, {})


async def test_requests_of_one_loop_turn_run_as_one_batch_and_each_gets_its_own_rows() -> None:
    batches: list[int] = []
    batcher = Batcher(_echo_model(batches), max_batch=8, slow_factor=lambda: 1.0)
    batcher.start()
    got: dict[int, tuple[np.ndarray | None, BaseException | None]] = {}
    sizes = {0: 1, 1: 3, 2: 2}
    try:
        for i, b in sizes.items():
            rows = np.full((b, 1), float(i), np.float32)
            batcher.submit_nowait(rows, lambda out, exc, i=i: got.__setitem__(i, (out, exc)))
        assert not got  # nothing runs in the turn that queued it
        assert (await batcher.submit(np.full((1, 1), 9.0, np.float32)))[0, 0] == 9.0
    finally:
        await batcher.close()
    assert batches == [7]  # 1 + 3 + 2 + the awaited one: one batch
    for i, b in sizes.items():
        out, exc = got[i]
        assert exc is None and out is not None and out.shape == (b, 2) and (out == i).all()


async def test_an_unwanted_request_is_skipped_and_close_cancels_what_is_queued() -> None:
    batches: list[int] = []
    batcher = Batcher(_echo_model(batches), max_batch=8, slow_factor=lambda: 1.0)
    batcher.start()
    got: list[tuple[str, BaseException | None]] = []
    x = np.zeros((1, 1), np.float32)
    batcher.submit_nowait(x, lambda out, exc: got.append(("unwanted", exc)), wanted=lambda: False)
    await batcher.submit(x)
    assert batches == [1] and len(got) == 1 and isinstance(got[0][1], asyncio.CancelledError)
    batcher.submit_nowait(x, lambda out, exc: got.append(("queued", exc)))
    await batcher.close()
    assert got[1][0] == "queued" and isinstance(got[1][1], asyncio.CancelledError) and batches == [1]
    batcher.submit_nowait(x, lambda out, exc: got.append(("late", exc)))  # after close: refused at once
    assert got[2][0] == "late" and isinstance(got[2][1], asyncio.CancelledError)


async def test_a_model_failure_reaches_every_request_of_the_batch_and_the_next_batch_still_runs() -> None:
    calls: list[int] = []

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.zeros((len(x), 2), np.float32)
    batcher = Batcher(LoadedModel(predict, (1,), 2, {}), max_batch=8, slow_factor=lambda: 1.0)
    batcher.start()
    x = np.zeros((1, 1), np.float32)
    try:
        results = await asyncio.gather(batcher.submit(x), batcher.submit(x), return_exceptions=True)
        assert all(isinstance(r, ValueError) and "boom" in str(r) for r in results), results
        assert (await batcher.submit(x)).shape == (1, 2)
    finally:
        await batcher.close()
    assert calls == [2, 1]
