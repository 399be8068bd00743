"""Degraded-mode evaluation: group queries into k-tuples, encode them with the coders/ code, run the
parity model, decode each position as if it were missing, and score against labels and base outputs.

Used per epoch by train.py (validation) and by ``parm eval`` (test set).
"""
from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coders import Code, make_code
from parity_models import checkpoint
from parity_models.cost import cost_fields
from parity_models.data import Dataset, check_fits, dataset_for_model
from parity_models.device import predict, resolve_device

MAX_PATTERNS = 64  # missing-slot patterns evaluated per number missing; all of them when there are fewer
EVAL_SEED = 1234  # fixed, so every evaluation of a test set uses the same coding groups
METRICS = ("base_top1", "base_top5", "degraded_top1", "degraded_top5", "recon_top1", "recon_top5")


def make_groups(n: int, k: int, seed: int = EVAL_SEED) -> torch.Tensor:
    """Shuffle indices 0..n-1 and cut them into coding groups: (n // k, k); the remainder is left out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n // k * k].view(-1, k)


@torch.no_grad()
def parity_outputs(parity: nn.Module, code: Code, x: torch.Tensor, groups: torch.Tensor, index: int = 0,
                   batch_size: int = 2048) -> torch.Tensor:
    """Outputs of parity model ``index`` for each group: x (N, *S), groups (G, k) -> (G, C)."""
    device = next(parity.parameters()).device
    was_training = parity.training
    parity.eval()
    outs = []
    for i in range(0, len(groups), batch_size):
        idx = groups[i:i + batch_size].T.to(x.device)  # (k, b)
        encoded = code.encode(x[idx].to(device))[index]  # (k, b, *S) -> (b, *S)
        outs.append(parity(encoded))
    parity.train(was_training)
    return torch.cat(outs)


def _in_topk(scores: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of rows whose ``target`` is among the top-k of ``scores`` (B, C)."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == target[:, None]).any(dim=1).float().mean()


def degraded_metrics(base_out: torch.Tensor, parity_out: torch.Tensor, groups: torch.Tensor,
                     labels: torch.Tensor, code: Code, index: int = 0) -> dict[str, float]:
    """Percent accuracies averaged over every group and every position of the missing query, decoded
    from parity ``index`` alone.

    base_out (N, C): base model outputs for all N queries; parity_out (G, C); groups (G, k).
    """
    idx = groups.T.to(base_out.device)  # (k, G)
    data_out, y = base_out[idx], labels.to(base_out.device)[idx]  # (k, G, C), (k, G)
    sums = dict.fromkeys(METRICS, 0.0)
    for i in range(code.k):
        decoded = code.decode_batch(data_out, parity_out, i, index)  # (G, C): F(X_i) as the frontend would see it
        base_pred = data_out[i].argmax(dim=1)
        for name, scores, target in (("base", data_out[i], y[i]), ("degraded", decoded, y[i]),
                                     ("recon", decoded, base_pred)):
            sums[f"{name}_top1"] += float(_in_topk(scores, target, 1))
            sums[f"{name}_top5"] += float(_in_topk(scores, target, 5))
    return {name: 100.0 * total / code.k for name, total in sums.items()}


def evaluate(base_ckpt: dict[str, Any] | str | Path, parity_ckpt: dict[str, Any] | str | Path, *,
             data_dir: str | Path | None = None, device: str = "auto", split: str = "test",
             seed: int = EVAL_SEED, data: Dataset | None = None, dataset: str | None = None) -> dict[str, Any]:
    """Score a base/parity pair on a split ("test" or "val"), decoding one missing output from that parity
    model alone (with its own code row, whatever its parity_index); returns settings and METRICS (percent).

    ``data`` overrides loading ``dataset`` (default: the base model's; tests pass small subsets)."""
    base_ckpt = checkpoint.load(base_ckpt) if isinstance(base_ckpt, (str, Path)) else base_ckpt
    parity_ckpt = checkpoint.load(parity_ckpt) if isinstance(parity_ckpt, (str, Path)) else parity_ckpt
    k, code_name = parity_ckpt["meta"]["k"], parity_ckpt["meta"]["code"]
    checkpoint.check_pair(base_ckpt, parity_ckpt, k, code_name)
    dev = resolve_device(device)
    data = data or dataset_for_model(base_ckpt, dataset, data_dir)
    check_fits(base_ckpt, data)
    x, y = (data.test_x, data.test_y) if split == "test" else (data.val_x, data.val_y)
    index = parity_ckpt["meta"].get("parity_index", 0)  # parity model l encodes and decodes with code row l
    code = make_code(code_name, k, index + 1)
    groups = make_groups(len(x), k, seed)
    base_model, parity_model = checkpoint.build_model(base_ckpt, dev), checkpoint.build_model(parity_ckpt, dev)
    base_out = predict(base_model, x)
    parity_out = parity_outputs(parity_model, code, x, groups, index)
    metrics = degraded_metrics(base_out, parity_out, groups, y, code, index)
    cost = cost_fields(base_model, parity_model, tuple(x.shape[1:]), k)  # beside the accuracy it buys
    return {"dataset": data.name, "split": split, "k": k, "code": code_name, "parity_index": index,
            "base_arch": base_ckpt["arch"], "parity_arch": parity_ckpt["arch"], "groups": len(groups), "seed": seed,
            **metrics, **cost}


def erasure_patterns(k: int, s: int, seed: int = EVAL_SEED) -> list[tuple[int, ...]]:
    """Which data slots are missing: every s-subset of 0..k-1, or MAX_PATTERNS sampled ones."""
    combos = list(itertools.combinations(range(k), s))
    return combos if len(combos) <= MAX_PATTERNS else random.Random(seed).sample(combos, MAX_PATTERNS)


def erasure_metrics(code: Code, data_out: torch.Tensor, parity_out: torch.Tensor, labels: torch.Tensor, s: int,
                    seed: int = EVAL_SEED) -> dict[str, Any]:
    """METRICS (percent) with s data outputs missing and every parity in, decoded by ``code.decode`` as
    the frontend does; averaged over groups, patterns of missing slots and the missing slots.

    data_out (k, G, C) base outputs; parity_out (r, G, C) parity outputs; labels (k, G)."""
    patterns = erasure_patterns(code.k, s, seed)
    sums = dict.fromkeys(METRICS, 0.0)
    for pattern in patterns:
        available = {j: data_out[j] for j in range(code.k) if j not in pattern} | \
                    {code.k + i: parity_out[i] for i in range(code.r)}
        for m, decoded in code.decode(available).items():  # decoded (G, C)
            for name, scores, target in (("base", data_out[m], labels[m]), ("degraded", decoded, labels[m]),
                                         ("recon", decoded, data_out[m].argmax(1))):
                sums[f"{name}_top1"] += float(_in_topk(scores, target, 1))
                sums[f"{name}_top5"] += float(_in_topk(scores, target, 5))
    count = len(patterns) * s
    return {"missing": s, "patterns": len(patterns), **{n: 100.0 * v / count for n, v in sums.items()}}


@torch.no_grad()
def evaluate_learned(base_ckpt: dict[str, Any] | str | Path, parity_ckpts: list[dict[str, Any] | str | Path], *,
                     missing: int | None = None, data_dir: str | Path | None = None, device: str = "auto",
                     seed: int = EVAL_SEED, data: Dataset | None = None,
                     dataset: str | None = None) -> list[dict[str, Any]]:
    """A learned code with r = len(parity_ckpts) parity models (their parity_index 0..r-1): one result
    row per number of missing data outputs s (``missing`` or 1..r), as the frontend would decode."""
    base_ckpt = checkpoint.load(base_ckpt) if isinstance(base_ckpt, (str, Path)) else base_ckpt
    parities = [checkpoint.load(p) if isinstance(p, (str, Path)) else p for p in parity_ckpts]
    k, code_name = parities[0]["meta"]["k"], parities[0]["meta"]["code"]
    for p in parities:
        checkpoint.check_pair(base_ckpt, p, k, code_name)
    parities.sort(key=lambda p: p["meta"].get("parity_index", 0))
    indices = [p["meta"].get("parity_index", 0) for p in parities]
    if indices != list(range(len(parities))):
        raise checkpoint.CheckpointError(f"parity models must have parity_index 0..{len(parities) - 1} once each; "
                                         f"got {indices}")
    code = make_code(code_name, k, len(parities))
    dev = resolve_device(device)
    data = data or dataset_for_model(base_ckpt, dataset, data_dir)
    check_fits(base_ckpt, data)
    groups = make_groups(len(data.test_x), k, seed)  # (G, k)
    idx = groups.T  # (k, G)
    data_out = predict(checkpoint.build_model(base_ckpt, dev), data.test_x)[idx]  # (k, G, C)
    parity_out = torch.stack([parity_outputs(checkpoint.build_model(p, dev), code, data.test_x, groups, i)
                              for i, p in enumerate(parities)])  # (r, G, C)
    labels = data.test_y[idx].to(data_out.device)
    return [{"dataset": data.name, "code": code_name, "k": k, "r": code.r, "parity_arch": parities[0]["arch"],
             "groups": len(groups), **erasure_metrics(code, data_out, parity_out, labels, s, seed)}
            for s in ([missing] if missing else range(1, code.r + 1))]


def format_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """A plain-text table of ``rows`` (floats with two decimals) for terminals and logs."""
    cells = [[f"{r.get(c):.2f}" if isinstance(r.get(c), float) else "-" if r.get(c) is None else str(r[c])
              for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
