"""Berrut evaluation is consistent: for an affine base model with k=2, r=1 the decode is exact,
so degraded accuracy equals base accuracy; larger k on the same model is approximate."""
from __future__ import annotations

import torch

from parity_models import checkpoint
from parity_models.data import Dataset
from parity_models.evaluate_berrut import evaluate_berrut
from parity_models.models import Linear


def tiny() -> tuple[dict, Dataset]:
    torch.manual_seed(0)
    model = Linear([1, 28, 28], 10)
    ckpt = checkpoint.make_checkpoint(model, kind="base", arch="linear", arch_args={"input_shape": [1, 28, 28]},
                                      input_shape=[1, 28, 28], num_classes=10, meta={"dataset": "tiny"})
    x = torch.rand(240, 1, 28, 28)
    y = model(x).argmax(1)  # labels the model gets right: A_a = 100
    return ckpt, Dataset("tiny", x, y, x, y, x, y, 10)


def test_k2_r1_is_exact_for_an_affine_model() -> None:
    ckpt, data = tiny()
    (row,) = evaluate_berrut(ckpt, 2, 1, data=data, device="cpu")
    assert row["base_top1"] == 100.0 and abs(row["degraded_top1"] - 100.0) < 1e-9
    assert row["groups"] == 120 and row["patterns"] == 2


def test_rows_per_missing_count_and_larger_k_is_approximate() -> None:
    ckpt, data = tiny()
    rows = evaluate_berrut(ckpt, 8, 2, data=data, device="cpu")
    assert [r["missing"] for r in rows] == [1, 2] and rows[1]["patterns"] == 28
    assert all(r["degraded_top1"] < 100.0 for r in rows)
