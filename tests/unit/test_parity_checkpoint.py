"""Checkpoints round-trip and rebuild; a parity model is refused for the wrong base model, k or code."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from parity_models import checkpoint
from parity_models.models import build


def _ckpt(arch: str, kind: str, seed: int = 0, meta: dict | None = None) -> dict:
    torch.manual_seed(seed)
    args = {"input_shape": [1, 28, 28], "num_classes": 10, "mean": 0.13, "std": 0.31}
    return checkpoint.make_checkpoint(build(arch, args), kind=kind, arch=arch, arch_args=args,
                                      input_shape=[1, 28, 28], num_classes=10, meta=meta)


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_round_trip_rebuilds_same_model(tmp_path: Path, arch: str) -> None:
    ckpt = _ckpt(arch, "base", meta={"dataset": "mnist"})
    checkpoint.save(ckpt, tmp_path / "m.pt")
    loaded = checkpoint.load(tmp_path / "m.pt")
    assert checkpoint.model_id(loaded) == checkpoint.model_id(ckpt)
    x = torch.rand(3, 1, 28, 28)
    original = build(arch, ckpt["arch_args"])
    original.load_state_dict(ckpt["state_dict"])
    assert torch.equal(checkpoint.build_model(loaded)(x), original.eval()(x))
    assert loaded["meta"] == {"dataset": "mnist"}


def test_pair_check() -> None:
    base = _ckpt("mlp", "base")
    parity = _ckpt("mlp", "parity", seed=1, meta={"k": 2, "code": "concat", "base_id": checkpoint.model_id(base)})
    checkpoint.check_pair(base, parity, 2, "concat")
    with pytest.raises(checkpoint.CheckpointError, match="k=2, not k=3"):
        checkpoint.check_pair(base, parity, 3, "concat")
    with pytest.raises(checkpoint.CheckpointError, match="code 'concat', not 'sum'"):
        checkpoint.check_pair(base, parity, 2, "sum")
    with pytest.raises(checkpoint.CheckpointError, match="base model"):
        checkpoint.check_pair(_ckpt("mlp", "base", seed=2), parity, 2, "concat")
    with pytest.raises(checkpoint.CheckpointError, match="kinds"):
        checkpoint.check_pair(parity, base, 2, "concat")
