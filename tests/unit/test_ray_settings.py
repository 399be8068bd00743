"""rayserve's Ray-free parts: the slot binding of replicas (rayserve.directory) and the settings of
a Ray Serve deployment (rayserve.settings), checked without Ray installed."""
from __future__ import annotations

import pytest

from frontend.errors import ConfigError
from rayserve.directory import ReplicaDirectory
from rayserve.settings import DATA, PARITY, RaySettings


def test_slots_keep_their_replica_and_a_replacement_takes_the_freed_slot() -> None:
    d = ReplicaDirectory()
    d.configure(3)
    d.update(["b", "a", "c"])
    assert [d.replica_of(i) for i in range(3)] == ["a", "b", "c"]  # id order: not Ray's listing order
    d.update(["a", "c", "z"])  # b died, z replaced it
    assert [d.replica_of(i) for i in range(3)] == ["a", "z", "c"]
    d.forget("c")  # a call found c dead before the router's next report
    assert d.replica_of(2) is None and not d.is_live("c")
    d.update(["a", "z", "c", "extra"])  # more replicas than slots: the surplus stays unused
    assert [d.replica_of(i) for i in range(3)] == ["a", "z", "c"]
    assert d.replica_of(7) is None


def test_a_router_report_before_the_slots_are_configured_is_kept() -> None:
    d = ReplicaDirectory()
    d.update(["r1", "r2"])
    d.configure(2)
    assert [d.replica_of(0), d.replica_of(1)] == ["r1", "r2"]
    with pytest.raises(ValueError):
        d.configure(0)


def test_layout_per_mode() -> None:
    coded = RaySettings(model="m", parity_model="p", data_replicas=4, parity_replicas=2)
    assert coded.layout() == [("data", DATA, 4, "data"), ("parity", PARITY, 2, "parity")]
    equal = RaySettings(model="m", mode="equal", data_replicas=4, parity_replicas=2)
    assert equal.layout() == [("data", DATA, 6, "data")] and equal.data_deployment_replicas == 6
    assert len(equal.frontend_config().all_data_workers) == 6
    ray_routed = RaySettings(model="m", mode="equal", routing="ray", data_replicas=4, parity_replicas=2)
    assert ray_routed.layout() == [("data", DATA, 1, "data")]  # one slot: Ray's router picks the replica
    assert ray_routed.data_deployment_replicas == 6
    assert RaySettings(model="m", mode="none", parity_replicas=0).layout() == [("data", DATA, 2, "data")]


def test_frontend_settings_reach_the_frontend() -> None:
    s = RaySettings(model="m", parity_model="p", k=4, data_replicas=4,
                    frontend={"deadline_ms": 250, "decode_policy": "eager"})
    cfg = s.frontend_config()
    assert (cfg.k, cfg.deadline_ms, cfg.decode_policy, len(cfg.data), len(cfg.parity)) == (4, 250, "eager", 4, 1)


@pytest.mark.parametrize("args, needle", [
    ({"model": "m", "parity_model": "p", "routing": "ray"}, "needs routing 'pinned'"),
    ({"model": "m", "mode": "hedged", "routing": "ray"}, "needs routing 'pinned'"),
    ({"model": "m"}, "needs parity_model"),
    ({"model": "m", "parity_model": "p", "parity_replicas": 0}, "parity_replicas >= 1"),
    ({"model": "m", "parity_model": "p", "mode": "fast"}, "mode must be one of"),
    ({"model": "m", "parity_model": "p", "frontend": {"deadline": 5}}, "unknown frontend settings ['deadline']"),
    ({"model": "m", "parity_model": "p", "frontend": {"port": 9}}, "unknown frontend settings ['port']"),
    ({"model": "m", "parity_model": "p", "k": 1}, "k >= 2"),
    ({"model": "m", "parity_model": "p", "replicas": 3}, "unknown settings ['replicas']"),
    ({"parity_model": "p"}, "model"),
    ({"model": "m", "parity_model": "p", "frontend": {"deadline_ms": -1}}, "deadline_ms must be > 0"),
])
def test_bad_settings_are_clear_errors(args: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        RaySettings.from_args(args)
    assert needle in str(info.value), str(info.value)


def test_serve_run_key_value_strings_are_typed() -> None:
    s = RaySettings.from_args({"model": "m", "parity_model": "p", "k": "4", "data_replicas": "4", "replica_cpus": "0.5",
                               "fault_injection": "true", "frontend": '{"deadline_ms": 300}'})
    assert (s.k, s.data_replicas, s.replica_cpus, s.fault_injection) == (4, 4, 0.5, True)
    assert s.frontend == {"deadline_ms": 300}
    for bad in ({"k": "two"}, {"fault_injection": "maybe"}, {"frontend": "[1]"}):
        with pytest.raises(ConfigError, match="is not a"):
            RaySettings.from_args({"model": "m", "parity_model": "p", **bad})
