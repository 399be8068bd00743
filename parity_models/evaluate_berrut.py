"""Degraded-mode accuracy of the training-free Berrut code: the base model serves the data and the
r parity queries; for every coding group of the test set and every pattern of s missing data
outputs (s = 1..r), the missing outputs are decoded from the ones that arrived. Same metrics as
``evaluate`` (A_a, A_d, recon, top-1 and top-5), averaged over groups and patterns.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from coders import BerrutCode
from parity_models import checkpoint
from parity_models.data import Dataset, check_fits, dataset_for_model
from parity_models.device import predict, resolve_device
from parity_models.evaluate import EVAL_SEED, erasure_metrics, make_groups


@torch.no_grad()
def evaluate_berrut(base_ckpt: dict[str, Any] | str | Path, k: int, r: int, *, missing: int | None = None,
                    data_dir: str | Path | None = None, device: str = "auto", seed: int = EVAL_SEED,
                    data: Dataset | None = None, dataset: str | None = None) -> list[dict[str, Any]]:
    """One result row per number of missing outputs s (``missing`` or 1..r), metrics in percent."""
    base_ckpt = checkpoint.load(base_ckpt) if isinstance(base_ckpt, (str, Path)) else base_ckpt
    dev = resolve_device(device)
    data = data or dataset_for_model(base_ckpt, dataset, data_dir)
    check_fits(base_ckpt, data)
    code = BerrutCode(k, r)
    model = checkpoint.build_model(base_ckpt, dev)
    x = data.test_x
    groups = make_groups(len(x), k, seed)  # (G, k)
    idx = groups.T  # (k, G)
    data_out = predict(model, x)[idx]  # (k, G, C)
    parity_in = code.encode(x[idx])  # (r, G, *S): the interpolant at the parity nodes
    parity_out = torch.stack([predict(model, parity_in[i]) for i in range(r)])  # (r, G, C)
    labels = data.test_y[idx].to(data_out.device)  # (k, G)
    return [{"dataset": data.name, "code": "berrut", "k": k, "r": r, "groups": len(groups),
             **erasure_metrics(code, data_out, parity_out, labels, s, seed)}
            for s in ([missing] if missing else range(1, r + 1))]
