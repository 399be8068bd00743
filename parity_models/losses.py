"""Parity-model training losses: what the parity output P is pulled towards, given the base outputs of the
k queries it encodes (precomputed by train.py) and, for ``kl-ce``, their labels.

Every loss but ``mse`` scores the decoded outputs, decode(P, others) for each slot as if it were the missing
one, averaged over the k slots: the answer a client would get.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from coders import Code

LOSSES = ("mse", "kl", "kl-ce", "ce-base")
LOSS_HELP = ("mse: onto the code's target, the summed base outputs (ParM); kl: each decoded output's softmax onto "
             "the base model's (distillation); kl-ce: kl plus cross-entropy of each decoded output with the true "
             "label; ce-base: cross-entropy of each decoded output with the base model's top class")
LABELLED = frozenset({"kl-ce"})  # losses that need the labels of the encoded queries


def parity_loss(kind: str, out: torch.Tensor, data_out: torch.Tensor, code: Code, index: int = 0,
                labels: torch.Tensor | None = None) -> torch.Tensor:
    """out (B, C): outputs of parity model ``index``; data_out (k, B, C): base outputs of the tuple's
    queries; labels (k, B): their labels (``kl-ce`` only)."""
    if kind == "mse":
        return F.mse_loss(out, code.target(data_out)[index])
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; known: {', '.join(LOSSES)}")
    if kind in LABELLED and labels is None:
        raise ValueError(f"loss {kind!r} needs the queries' labels")
    losses = []
    for i in range(code.k):
        decoded = code.decode_batch(data_out, out, i, index)  # (B, C): F(X_i) as the frontend would rebuild it
        losses.append(_slot_loss(kind, decoded, data_out[i], labels[i] if labels is not None else None))
    return torch.stack(losses).mean()


def _slot_loss(kind: str, decoded: torch.Tensor, base: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """decoded, base (B, C); labels (B,) or None."""
    if kind == "ce-base":
        return F.cross_entropy(decoded, base.argmax(1))
    kl = F.kl_div(F.log_softmax(decoded, 1), F.log_softmax(base, 1), reduction="batchmean", log_target=True)
    if kind == "kl":
        return kl
    assert labels is not None  # kl-ce: checked by parity_loss
    return kl + F.cross_entropy(decoded, labels)
