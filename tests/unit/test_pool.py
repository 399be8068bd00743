"""Parity routing with r >= 2 learned parity models: parity model l serves only parity slot k+l, a
base model (Berrut) serves any, and a parity model of an index the deployment lacks is refused."""
from __future__ import annotations

from typing import Any

from frontend.config import FrontendConfig
from frontend.pool import WorkerPool, parity_index
from frontend.worker_client import WorkerClient

BASE_INFO = {"kind": "base", "model_id": "base0", "input_shape": [1, 28, 28], "meta": {}}


def parity_info(meta: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "parity", "model_id": "p", "input_shape": [1, 28, 28],
            "meta": {"k": 4, "code": "sum", "base_id": "base0"} | meta}


def pool_with(parity_infos: list[dict[str, Any]], r: int = 2) -> WorkerPool:
    """A pool whose workers look connected and probed, with these infos (nothing is started)."""
    n = len(parity_infos)
    cfg = FrontendConfig(data=tuple(("127.0.0.1", 1000 + i) for i in range(4)),
                         parity=tuple(("127.0.0.1", 2000 + i) for i in range(n)), k=4, r=r, code="sum")
    pool = WorkerPool(cfg)
    for w, info in zip(pool.all, [BASE_INFO] * 4 + parity_infos):
        healthy(w, info)
    return pool


def healthy(w: WorkerClient, info: dict[str, Any]) -> None:
    w.info = info
    w.probe_ok = True
    w._mark_connected()


def test_learned_parity_models_serve_only_their_index_and_base_models_serve_any() -> None:
    old, one, base = parity_info({}), parity_info({"parity_index": 1}), dict(BASE_INFO)
    pool = pool_with([old, one, base])
    p_old, p_one, p_base = pool.parity
    assert pool.parity_for(0) == [p_old, p_base]  # no parity_index: a checkpoint from before r >= 2, index 0
    assert pool.parity_for(1) == [p_one, p_base]
    assert [parity_index(w.info) for w in pool.parity] == [0, 1, None]
    assert [p["parity_index"] for p in pool.summary()["parity"]] == [0, 1, None]


def test_pick_for_an_index_keeps_avoiding_used_workers_and_fails_when_none_is_healthy() -> None:
    pool = pool_with([parity_info({"parity_index": 1}), dict(BASE_INFO), dict(BASE_INFO)])
    p_one, base_a, base_b = pool.parity
    assert pool.pick(pool.parity_for(0), avoid={base_a}) is base_b
    assert pool.pick(pool.parity_for(1), avoid={base_a, base_b}) is p_one
    for w in (base_a, base_b):
        w.probe_ok = False
    assert pool.pick(pool.parity_for(0)) is None  # slot k+0 fails; slot k+1 is still served
    assert pool.pick(pool.parity_for(1)) is p_one


def test_a_parity_model_for_an_index_beyond_r_is_refused_with_the_reason() -> None:
    pool = pool_with([parity_info({"parity_index": 0}), parity_info({"parity_index": 2}),
                      parity_info({"parity_index": "one"})], r=2)
    pool.check_agreement()
    ok, beyond, malformed = pool.parity
    assert ok.refused is None and ok.healthy
    assert beyond.refused is not None and "parity_index=2" in beyond.refused and "r=2" in beyond.refused
    assert malformed.refused is not None and "parity_index='one'" in malformed.refused
    assert not beyond.healthy and pool.parity_for(1) == []  # refused, and no other worker has index 1


def test_the_same_parity_model_is_accepted_where_r_covers_its_index() -> None:
    pool = pool_with([parity_info({"parity_index": 2})], r=3)
    pool.check_agreement()
    assert pool.parity[0].refused is None and pool.parity_for(2) == pool.parity


# -- model agreement: the reference is the declared model, or the one most data workers serve -------

def base(model_id: str) -> dict[str, Any]:
    return {"kind": "base", "model_id": model_id, "input_shape": [1, 28, 28], "meta": {}}


def parity_of(base_id: str) -> dict[str, Any]:
    return {"kind": "parity", "model_id": f"p-{base_id}", "input_shape": [1, 28, 28],
            "meta": {"k": 2, "code": "sum", "base_id": base_id}}


def k2_pool(data: list[dict[str, Any]], parity: list[dict[str, Any]], **kw: Any) -> WorkerPool:
    cfg = FrontendConfig(data=tuple(("127.0.0.1", 1000 + i) for i in range(len(data))),
                         parity=tuple(("127.0.0.1", 2000 + i) for i in range(len(parity))), k=2, code="sum", **kw)
    pool = WorkerPool(cfg)
    for w, info in zip(pool.all, data + parity):
        healthy(w, info)
    pool.check_agreement()
    return pool


def refused(pool: WorkerPool) -> list[bool]:
    return [w.refused is not None for w in pool.all]


def serve(pool: WorkerPool, w: WorkerClient, info: dict[str, Any]) -> None:
    """``w`` came back serving ``info`` (a new probe answered)."""
    healthy(w, info)
    pool.check_agreement()


def test_the_reference_is_the_model_most_data_workers_serve_not_the_first_to_answer() -> None:
    pool = k2_pool([base("B"), base("A"), base("A")], [parity_of("A")])
    assert refused(pool) == [True, False, False, False]
    assert "model B differs" in (pool.data[0].refused or "")


def test_a_refused_worker_is_accepted_again_once_it_serves_the_reference_model() -> None:
    pool = k2_pool([base("A"), base("A"), base("A")], [parity_of("A")])
    serve(pool, pool.data[1], base("A") | {"input_shape": [3, 32, 32]})
    assert refused(pool) == [False, True, False, False] and "input shape" in (pool.data[1].refused or "")
    serve(pool, pool.data[1], base("A"))
    assert refused(pool) == [False] * 4 and pool.data[1].healthy


def test_a_rolling_upgrade_moves_the_reference_with_the_majority() -> None:
    pool = k2_pool([base("A"), base("A"), base("A")], [parity_of("A")])
    serve(pool, pool.data[0], base("B"))
    assert refused(pool) == [True, False, False, False]   # one new worker: the old model is still the majority
    serve(pool, pool.data[1], base("B"))
    assert refused(pool) == [False, False, True, True]    # the majority moved: the old ones are refused now
    serve(pool, pool.data[2], base("B"))
    serve(pool, pool.parity[0], parity_of("B"))
    assert refused(pool) == [False] * 4 and all(w.healthy for w in pool.all)


def test_a_tie_keeps_the_reference_and_disconnected_workers_do_not_vote() -> None:
    pool = k2_pool([base("A"), base("A")], [parity_of("A")])
    serve(pool, pool.data[1], base("B"))
    assert refused(pool) == [False, True, False]          # 1 to 1: the model served so far stays
    pool.data[0]._mark_disconnected()                     # restarting: only the new worker is connected
    pool.check_agreement()
    assert pool.data[1].refused is None and pool.parity[0].refused is not None
    serve(pool, pool.data[0], base("B"))
    serve(pool, pool.parity[0], parity_of("B"))
    assert refused(pool) == [False] * 3


def test_a_declared_model_is_the_reference_whatever_the_workers_serve() -> None:
    pool = k2_pool([base("A"), base("B"), base("A")], [parity_of("A"), parity_of("B")], model_id="B")
    assert refused(pool) == [True, False, True, True, False]
    assert "model A differs" in (pool.data[0].refused or "") and "base_id='A'" in (pool.parity[0].refused or "")
    serve(pool, pool.data[0], base("B"))
    assert refused(pool) == [False, False, True, True, False]


def test_is_slow_agrees_with_the_decayed_pace_rule_without_computing_every_decay() -> None:
    """pool.is_slow skips the exponential decay for an estimate already under the limit; its verdicts
    match SLOW x the typical pace, with each worker's pace taken at the moment asked."""
    from frontend import clock
    from frontend.balance import SLOW

    pool = pool_with([parity_info({})], r=1)
    data = pool.data
    with clock.simulated(lambda: 10.0):
        for w, seconds in zip(data, [0.010, 0.010, 0.011, 0.200]):
            w.pace.observe(seconds, 10.0)
        assert [pool.is_slow(w) for w in data] == [False, False, False, True]
    # 3 s later the others answer in 10 ms again, while the slow worker, unused, decayed by e^3 (to ~10 ms):
    # its stored estimate (200 ms) is still over the limit, its pace now is not
    with clock.simulated(lambda: 13.0):
        for w in data[:3]:
            w.pace.observe(0.010, 13.0)
        assert data[3].pace.estimate > SLOW * 0.010 > data[3].pace.value(13.0)
        assert [pool.is_slow(w) for w in data] == [False, False, False, False]
