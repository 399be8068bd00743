"""Learned codes with r = 2 parities: the built-in linear model (k=4, sum code) served by in-process
workers, where parity worker l runs parity model l, whose exact output is sum_i t_i^l F(x_i). Two
stragglers in a group are decoded exactly, and a parity model for an index the deployment lacks
is refused."""
from __future__ import annotations

import numpy as np

from coders import SumCode
from frontend.config import FrontendConfig
from tests.conftest import eventually, frontend, service_of, worker_servers
from workers.model import load_model

LINEAR = load_model("builtin:linear")
K, R = 4, 2
PARITY = [f"builtin:linear:parity_k={K},parity_index={index}" for index in range(3)]
RNG = np.random.default_rng(7)


def images(n: int) -> np.ndarray:
    return RNG.random((n, 1, 28, 28), dtype=np.float32)


def cfg(data, parity, **kw) -> FrontendConfig:
    base = {"k": K, "r": R, "code": "sum", "mode": "coded", "deadline_ms": 5000, "health_interval_s": 5.0}
    return FrontendConfig(data=data, parity=parity, **(base | kw))


def test_builtin_parity_model_l_is_exact_for_row_l_and_has_its_own_id() -> None:
    code = SumCode(K, 3)
    x = images(K)[:, None]  # (k, 1, 1, 28, 28)
    target = code.target(np.stack([LINEAR.predict(q) for q in x]))  # (3, 1, C): sum_i t_i^l F(x_i)
    models = [load_model(spec) for spec in PARITY]
    for index, (model, parity_query) in enumerate(zip(models, code.encode(x))):
        np.testing.assert_allclose(model.predict(parity_query), target[index], rtol=1e-4, atol=1e-4)
        assert model.info["meta"]["parity_index"] == index and model.info["meta"]["code"] == "sum"
    assert len({m.info["model_id"] for m in models}) == 3
    assert models[0].info["model_id"] == load_model(f"builtin:linear:parity_k={K}").info["model_id"]  # r=1's


async def test_two_stragglers_per_group_are_decoded_exactly_from_two_learned_parities(addr) -> None:
    # the index-1 worker listed first: a parity query sent to the wrong model would decode wrongly
    async with worker_servers(["builtin:linear"] * K + [PARITY[1], PARITY[0]]) as ws, \
            frontend(cfg(addr(ws[:K]), addr(ws[K:]))) as c:
        pool = service_of(c).pool
        await eventually(lambda: all(w.healthy for w in pool.parity))
        ready = await (await c.get("/ready")).json()
        assert ready["r"] == R and [p["parity_index"] for p in ready["workers"]["parity"]] == [1, 0]
        assert ready["parity_served"] == [True, True]
        ws[1].faults.set("stall")
        ws[2].faults.set("stall")
        x = images(2 * K)  # two groups, each spread over the 4 data workers: two stragglers each
        resp = await c.post("/predict", json={"inputs": x.tolist()})
        body = await resp.json()
        assert resp.status == 200, body
        assert sum(body["degraded"]) == 4
        # linear model + exact parity models: the decoded answers are the base model's own outputs
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-4, atol=1e-4)
        stats = service_of(c).stats
        assert stats.groups_coded == 2 and stats.degraded == 4
        ws[1].faults.set("none")
        ws[2].faults.set("none")


async def test_parity_model_beyond_r_is_refused_and_a_slot_without_its_model_fails_alone(addr) -> None:
    async with worker_servers(["builtin:linear"] * K + [PARITY[0], PARITY[2]]) as ws, \
            frontend(cfg(addr(ws[:K]), addr(ws[K:]), health_interval_s=0.05)) as c:
        pool = service_of(c).pool
        await eventually(lambda: pool.parity[1].refused is not None)
        assert "parity_index=2" in pool.parity[1].refused and "r=2" in pool.parity[1].refused
        await eventually(lambda: pool.parity[0].healthy)
        assert (await (await c.get("/ready")).json())["parity_served"] == [True, False]
        ws[3].faults.set("stall")
        x = images(K)
        body = await (await c.post("/predict", json={"inputs": x.tolist()})).json()
        # parity slot k+1 has no model to run it; parity 0 alone still rebuilds one straggler exactly
        # (with one missing the decode uses parity 0 alone, whatever else arrives)
        assert sum(body["degraded"]) == 1
        np.testing.assert_allclose(np.array(body["outputs"]), LINEAR.predict(x), rtol=1e-4, atol=1e-4)
        assert service_of(c).stats.groups_coded == 1
        ws[3].faults.set("none")
