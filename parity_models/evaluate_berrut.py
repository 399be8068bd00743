"""Degraded-mode accuracy of the training-free Berrut code: the base model serves the data and the
r parity queries; for every coding group of the test set and every pattern of s missing data
outputs (s = 1..r), the missing outputs are decoded from the ones that arrived. Same metrics as
``evaluate`` (A_a, A_d, recon, top-1 and top-5), averaged over groups and patterns.
"""
from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import torch

from coders import BerrutCode
from parity_models import checkpoint
from parity_models.data import Dataset, load_dataset
from parity_models.device import predict, resolve_device
from parity_models.evaluate import EVAL_SEED, METRICS, _in_topk, make_groups

MAX_PATTERNS = 64  # missing-position patterns per s; all of them when there are fewer


@torch.no_grad()
def evaluate_berrut(base_ckpt: dict[str, Any] | str | Path, k: int, r: int, *, missing: int | None = None,
                    data_dir: str | Path | None = None, device: str = "auto", seed: int = EVAL_SEED,
                    data: Dataset | None = None) -> list[dict[str, Any]]:
    """One result row per number of missing outputs s (``missing`` or 1..r), metrics in percent."""
    base_ckpt = checkpoint.load(base_ckpt) if isinstance(base_ckpt, (str, Path)) else base_ckpt
    dev = resolve_device(device)
    data = data or load_dataset(base_ckpt["meta"]["dataset"], data_dir)
    code = BerrutCode(k, r)
    model = checkpoint.build_model(base_ckpt, dev)
    x, y = data.test_x, data.test_y
    groups = make_groups(len(x), k, seed)  # (G, k)
    idx = groups.T  # (k, G)
    data_out = predict(model, x)[idx]  # (k, G, C)
    parity_in = code.encode(x[idx])  # (r, G, *S): the interpolant at the parity nodes
    parity_out = torch.stack([predict(model, parity_in[i]) for i in range(r)])  # (r, G, C)
    labels = y[idx].to(data_out.device)  # (k, G)
    rows = []
    for s in ([missing] if missing else range(1, r + 1)):
        patterns = _patterns(k, s, seed)
        sums = dict.fromkeys(METRICS, 0.0)
        for pattern in patterns:
            available = {j: data_out[j] for j in range(k) if j not in pattern} | \
                        {k + i: parity_out[i] for i in range(r)}
            for m, decoded in code.decode(available).items():  # decoded (G, C)
                for name, scores, target in (("base", data_out[m], labels[m]), ("degraded", decoded, labels[m]),
                                             ("recon", decoded, data_out[m].argmax(1))):
                    sums[f"{name}_top1"] += float(_in_topk(scores, target, 1))
                    sums[f"{name}_top5"] += float(_in_topk(scores, target, 5))
        count = len(patterns) * s
        rows.append({"dataset": data.name, "code": "berrut", "k": k, "r": r, "missing": s, "groups": len(groups),
                     "patterns": len(patterns), **{n: 100.0 * v / count for n, v in sums.items()}})
    return rows


def _patterns(k: int, s: int, seed: int) -> list[tuple[int, ...]]:
    """Which data slots are missing: every s-subset of 0..k-1, or MAX_PATTERNS sampled ones."""
    combos = list(itertools.combinations(range(k), s))
    if len(combos) <= MAX_PATTERNS:
        return combos
    return random.Random(seed).sample(combos, MAX_PATTERNS)
