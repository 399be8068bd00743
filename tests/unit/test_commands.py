"""CLI settings are checked before anything starts: bad pairs, bad fault flags, bad config."""
from __future__ import annotations

import pytest

from frontend.cli import main
from frontend.commands import default_parity_model, parse_faults
from frontend.config import FrontendConfig, parse_address
from frontend.errors import ConfigError
from parity_models import checkpoint
from parity_models.models import Linear


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


def test_flag_parsing_errors_are_actionable() -> None:
    assert parse_faults(["0=stall", "1=delay:ms=5"], 2) == {0: "stall", 1: "delay:ms=5"}
    with pytest.raises(ConfigError, match="INDEX in 0..1"):
        parse_faults(["2=stall"], 2)
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
    ({"code": "sum", "r": 2}, "r=1 only"),
])
def test_config_rejects_bad_settings(kwargs, message) -> None:
    base = {"data": (("127.0.0.1", 1),), "parity": (("127.0.0.1", 2),), "mode": "coded"}
    with pytest.raises(ConfigError, match=message):
        FrontendConfig(**(base | kwargs))
