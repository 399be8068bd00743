"""Model agreement heals: a rolling upgrade of real in-process workers, one restart at a time, ends
with every worker back in rotation serving the new model (no refusal outlives its cause)."""
from __future__ import annotations

import numpy as np

from frontend.config import FrontendConfig
from frontend.pool import WorkerPool
from tests.conftest import eventually, frontend, service_of, worker_servers
from workers.model import load_model
from workers.server import WorkerServer

OLD, OLD_PARITY = "builtin:linear", "builtin:linear:parity_k=2"
NEW, NEW_PARITY = "builtin:linear:seed=1", "builtin:linear:parity_k=2,seed=1"
NEW_MODEL = load_model(NEW)
RNG = np.random.default_rng(3)


async def restart(servers: list[WorkerServer], i: int, spec: str) -> None:
    """Replace worker i by one serving ``spec`` on the same port (the list is what the fixture closes)."""
    port = servers[i].port
    await servers[i].close()
    servers[i] = WorkerServer(load_model(spec), "127.0.0.1", port)
    await servers[i].start()


def serving(pool: WorkerPool, i: int, spec: str) -> bool:
    """The pool has seen worker i's new model (it answered a probe since its restart)."""
    w = pool.all[i]
    return w.connected and w.info.get("model_id") == load_model(spec).info["model_id"]


async def test_a_rolling_upgrade_ends_with_every_worker_in_rotation(addr) -> None:
    async with worker_servers([OLD] * 3 + [OLD_PARITY]) as ws:
        cfg = FrontendConfig(data=addr(ws[:3]), parity=addr(ws[3:]), k=2, code="sum", mode="coded",
                             deadline_ms=3000, health_interval_s=0.05, health_timeout_s=0.5)
        async with frontend(cfg) as c:
            pool = service_of(c).pool
            await eventually(lambda: all(w.healthy for w in pool.all))
            await restart(ws, 0, NEW)  # worker 0 first: the old model is still most workers'
            await eventually(lambda: serving(pool, 0, NEW) and pool.data[0].refused is not None)
            assert all(w.healthy for w in pool.all[1:])
            await restart(ws, 1, NEW)  # now most data workers serve the new model
            await eventually(lambda: serving(pool, 1, NEW) and pool.data[2].refused is not None)
            assert pool.data[0].refused is None and pool.parity[0].refused is not None
            await restart(ws, 2, NEW)
            await restart(ws, 3, NEW_PARITY)
            await eventually(lambda: all(w.healthy for w in pool.all), timeout=10)
            assert [w.refused for w in pool.all] == [None] * 4
            x = RNG.random((8, 1, 28, 28), dtype=np.float32)
            resp = await c.post("/predict", json={"inputs": x.tolist()})
            body = await resp.json()
            assert resp.status == 200, body
            np.testing.assert_allclose(np.array(body["outputs"]), NEW_MODEL.predict(x), rtol=1e-5, atol=1e-5)
            ready = service_of(c).readiness()
            assert ready["coded"] and ready["healthy_data_workers"] == 3, ready
