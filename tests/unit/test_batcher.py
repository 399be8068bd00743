"""workers.batcher: batches of a model that answers in well under a millisecond run on the event loop
(after a first one in the inference thread, which measures it); a slower model, or any batch under a
slow (contention) fault, runs in the thread, so the loop is never held long."""
from __future__ import annotations

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
