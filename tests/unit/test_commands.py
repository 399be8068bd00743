"""CLI settings are checked before anything starts: bad pairs, bad fault flags, bad config."""
from __future__ import annotations

import math

import pytest

from frontend.config import FrontendConfig, parse_address
from frontend.errors import ConfigError
from parity_models import checkpoint
from parity_models.models import Linear
from parm.cli import build_parser, main
from parm.commands import config_from_args
from parm.up_command import parse_faults, plan_up
from parm.up_models import default_parity_model, parity_models, parity_workers, resolve_code, split_models
from workers.cluster import cluster_specs


def save_linear(path, kind: str, meta: dict) -> str:
    model = Linear([1, 28, 28], 10)
    ckpt = checkpoint.make_checkpoint(model, kind=kind, arch="linear", arch_args={"input_shape": [1, 28, 28]},
                                      input_shape=[1, 28, 28], num_classes=10, meta=meta)
    checkpoint.save(ckpt, path)
    return str(path)


def test_parm_up_refuses_a_parity_model_of_another_base_before_starting(tmp_path) -> None:
    base = save_linear(tmp_path / "base.pt", "base", {"dataset": "mnist"})
    parity = save_linear(tmp_path / "parity.pt", "parity", {"k": 2, "code": "concat", "base_id": "0123456789abcdef"})
    with pytest.raises(SystemExit, match="parity model does not match.*trained for base model 0123456789abcdef"):
        main(["up", "--model", base, "--parity-model", parity, "--k", "2", "--code", "concat"])
    with pytest.raises(SystemExit, match="k=2, not k=4"):
        main(["up", "--model", base, "--parity-model", parity, "--k", "4", "--workers", "4", "--code", "concat"])


def test_bare_parm_up_plans_a_working_coded_cluster() -> None:
    args = build_parser().parse_args(["up"])
    plan = plan_up(args)
    assert plan.code == "sum"  # builtin:linear's exact parity model is the sum code's
    assert [s.role for s in plan.specs] == ["data", "data", "parity"]
    assert plan.models("data") == ["builtin:linear"] and plan.models("parity") == ["builtin:linear:parity_k=2"]
    cfg = config_from_args(args, (("127.0.0.1", 1), ("127.0.0.1", 2)), (("127.0.0.1", 3),), worker_secret="s",
                           code=plan.code)
    assert (cfg.mode, cfg.code, cfg.k, cfg.r, cfg.port, cfg.host) == ("coded", "sum", 2, 1, 8080, "127.0.0.1")


def test_code_auto_is_the_parity_models_own_code(tmp_path) -> None:
    base = save_linear(tmp_path / "base.pt", "base", {})
    base_id = checkpoint.model_id(checkpoint.load(base))
    parity = save_linear(tmp_path / "parity.pt", "parity", {"k": 2, "code": "concat", "base_id": base_id})
    assert resolve_code(base, parity, "auto") == "concat"
    assert resolve_code(base, None, "auto") == "berrut"  # no parity model trained: the training-free code
    assert resolve_code("builtin:linear", "builtin:linear:parity_k=2", "auto") == "sum"
    assert resolve_code(base, parity, "sum") == "sum"  # a code given is kept (and checked against the pair later)
    assert resolve_code(base, None, "auto", mode="equal") == "sum"  # replicas: no parity model to read
    plan = plan_up(build_parser().parse_args(["up", "--model", base]))
    assert plan.code == "berrut" and plan.models("parity") == [base]  # berrut's parity workers run the base model


def test_flag_parsing_errors_are_actionable() -> None:
    assert parse_faults(["0=stall", "1=delay:ms=5"], 2) == {0: "stall", 1: "delay:ms=5"}
    with pytest.raises(ConfigError, match="INDEX in 0..1"):
        parse_faults(["2=stall"], 2)
    with pytest.raises(ConfigError, match="--fault '0=stal': unknown fault 'stal'"):
        parse_faults(["0=stal"], 2)
    with pytest.raises(ConfigError, match="--code sum"):
        default_parity_model("builtin:linear", 2, "concat")
    assert default_parity_model("builtin:linear", 3, "sum") == "builtin:linear:parity_k=3"
    assert default_parity_model("base.pt", 8, "berrut") == "base.pt"  # training-free: the base model itself
    assert default_parity_model("builtin:sleep:ms=5", 2, "sum") == "builtin:sleep:ms=5,parity_k=2"
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_address("localhost")


@pytest.mark.parametrize("kwargs, message", [
    ({"data": ()}, "at least one data worker"),
    ({"mode": "coded", "parity": ()}, "at least one parity worker"),
    ({"mode": "coded", "k": 1}, "k >= 2"),
    ({"mode": "fast"}, "mode must be one of"),
    ({"code": "xor"}, "unknown code"),
    ({"deadline_ms": 0}, "deadline_ms must be > 0"),
    ({"deadline_ms": 10**6}, "exceeds max_deadline_ms"),
    ({"mode": "hedged", "parity": ()}, "two replicas"),
    ({"decode_grace_ms": -1}, "decode_grace_ms"),
    ({"r": 0}, "r must be >= 1"),
])
def test_config_rejects_bad_settings(kwargs, message) -> None:
    base = {"data": (("127.0.0.1", 1),), "parity": (("127.0.0.1", 2),), "mode": "coded"}
    with pytest.raises(ConfigError, match=message):
        FrontendConfig(**(base | kwargs))


@pytest.mark.parametrize("code", ["sum", "concat", "berrut"])
def test_every_code_accepts_r2(code) -> None:
    cfg = FrontendConfig(data=(("127.0.0.1", 1),), parity=(("127.0.0.1", 2),), mode="coded", code=code, k=4, r=2)
    assert cfg.r == 2


def test_parity_model_lists_split_checkpoints_but_keep_a_builtin_spec_whole() -> None:
    assert split_models("a.pt, b.pt") == ["a.pt", "b.pt"]
    assert split_models("builtin:linear:parity_k=4,seed=1,builtin:linear:parity_k=4,parity_index=1,c.pt") == [
        "builtin:linear:parity_k=4,seed=1", "builtin:linear:parity_k=4,parity_index=1", "c.pt"]
    assert split_models("runs/a=1/p0.pt,runs/a=1/p1.pt") == ["runs/a=1/p0.pt", "runs/a=1/p1.pt"]


def test_parm_up_defaults_to_one_builtin_parity_model_per_index_and_round_robins_them() -> None:
    models = parity_models("builtin:linear", None, 4, 2, "sum")
    assert models == ["builtin:linear:parity_k=4", "builtin:linear:parity_k=4,parity_index=1"]
    assert parity_models("builtin:linear", None, 4, 3, "berrut") == ["builtin:linear"]  # any index
    specs = cluster_specs(4, 3, "coded", "builtin:linear", models)
    assert [s.model for s in specs if s.role == "parity"] == [models[0], models[1], models[0]]


def test_parm_up_refuses_parity_models_out_of_index_order_or_too_few() -> None:
    swapped = "builtin:linear:parity_k=4,parity_index=1,builtin:linear:parity_k=4"
    with pytest.raises(ConfigError, match="parity_index=1, but it is listed at position 0"):
        parity_models("builtin:linear", swapped, 4, 2, "sum")
    with pytest.raises(ConfigError, match="lists 1 parity model.*--r 2 needs 2"):
        parity_models("builtin:linear", "builtin:linear:parity_k=4", 4, 2, "sum")


def test_parm_up_checks_every_parity_checkpoint_and_its_index(tmp_path) -> None:
    base = save_linear(tmp_path / "base.pt", "base", {})
    base_id = checkpoint.model_id(checkpoint.load(base))
    meta = {"k": 2, "code": "sum", "base_id": base_id}
    p0 = save_linear(tmp_path / "p0.pt", "parity", meta)  # no parity_index: an r=1 checkpoint, index 0
    p1 = save_linear(tmp_path / "p1.pt", "parity", meta | {"parity_index": 1})
    other = save_linear(tmp_path / "other.pt", "parity", meta | {"parity_index": 1, "base_id": "0123456789abcdef"})
    assert parity_models(base, f"{p0},{p1}", 2, 2, "sum") == [p0, p1]
    with pytest.raises(SystemExit, match="p1.pt is the parity model of parity_index=1, but it is listed at position 0"):
        main(["up", "--model", base, "--parity-model", f"{p1},{p0}", "--k", "2", "--r", "2", "--code", "sum"])
    with pytest.raises(SystemExit, match="trained for base model 0123456789abcdef"):
        main(["up", "--model", base, "--parity-model", f"{p0},{other}", "--k", "2", "--r", "2", "--code", "sum"])


def test_decode_policy_flags_reach_the_config() -> None:
    stand_in = ((("127.0.0.1", 1), ("127.0.0.1", 2)), (("127.0.0.1", 3),))
    cfg = config_from_args(build_parser().parse_args(["up"]), *stand_in, worker_secret="s", code="sum")
    assert (cfg.decode_policy, cfg.decode_quantile, cfg.decode_slack, cfg.hedge_fallback) == ("adaptive", 95.0, 1.25,
                                                                                              True)
    args = build_parser().parse_args(["up", "--decode-policy", "eager", "--no-hedge-fallback"])
    cfg = config_from_args(args, *stand_in, worker_secret="s", code="sum")
    assert cfg.decode_policy == "eager" and not cfg.hedge_fallback
    grace = config_from_args(build_parser().parse_args(["up", "--decode-grace-ms", "30"]), *stand_in,
                             worker_secret="s", code="sum")
    assert grace.decode_policy == "grace" and grace.decode().grace_s == pytest.approx(0.03)
    with pytest.raises(ConfigError, match="applies to the grace policy"):
        config_from_args(build_parser().parse_args(["up", "--decode-policy", "adaptive", "--decode-grace-ms", "30"]),
                         *stand_in, worker_secret="s", code="sum")
    with pytest.raises(ConfigError, match="not comma-separated numbers"):
        config_from_args(build_parser().parse_args(["up", "--default-output", "abc"]), *stand_in, worker_secret="s",
                         code="sum")


def test_event_loop_choice() -> None:
    import asyncio

    from parm.commands import loop_factory, run_on_loop
    assert loop_factory("asyncio") is None
    uvloop = pytest.importorskip("uvloop")  # a core dependency on Linux; absent only on other platforms

    async def loop_kind() -> str:
        return type(asyncio.get_running_loop()).__module__
    assert run_on_loop(loop_kind(), "uvloop").startswith("uvloop") and uvloop is not None
    assert run_on_loop(loop_kind(), "auto").startswith("uvloop")
    assert run_on_loop(loop_kind(), "asyncio").startswith("asyncio")
    with pytest.raises(ConfigError, match="--event-loop must be one of"):
        run_on_loop(loop_kind(), "trio")


def test_parm_up_sizes_parity_workers_for_a_parity_model_that_costs_more(tmp_path) -> None:
    """A collage backup at k=4 costs ~1.9 base MLP queries (MACs): 8 data workers get 4 parity
    workers, not 2, and the banner's plan says so; a base-sized parity model keeps N/k."""
    from parity_models.models import MLP, CollageMLP

    shape = [1, 28, 28]
    base = checkpoint.make_checkpoint(MLP(shape, 10), kind="base", arch="mlp", arch_args={"input_shape": shape},
                                      input_shape=shape, num_classes=10, meta={})
    checkpoint.save(base, tmp_path / "base.pt")
    meta = {"k": 4, "code": "collage", "base_id": checkpoint.model_id(base)}
    collage = checkpoint.make_checkpoint(CollageMLP(shape, 10, k=4), kind="parity", arch="collage",
                                         arch_args={"input_shape": shape, "k": 4}, input_shape=shape,
                                         num_classes=10, meta=meta)
    checkpoint.save(collage, tmp_path / "collage.pt")
    argv = ["up", "--model", str(tmp_path / "base.pt"), "--parity-model", str(tmp_path / "collage.pt"), "--k", "4",
            "--workers", "8"]
    plan = plan_up(build_parser().parse_args(argv))
    assert plan.code == "collage" and 1.5 < plan.parity_cost < 2.5
    assert sum(s.role == "parity" for s in plan.specs) == math.ceil(8 * plan.parity_cost / 4)
    fixed = plan_up(build_parser().parse_args([*argv, "--parity-workers", "2"]))
    assert sum(s.role == "parity" for s in fixed.specs) == 2
    with pytest.raises(ConfigError, match="--parity-workers must be >= r=1"):
        plan_up(build_parser().parse_args([*argv, "--parity-workers", "0"]))
    assert parity_workers(8, 4, 1, None) == 2 and parity_workers(8, 4, 1, 0.5) == 2  # cheaper: still r per k
