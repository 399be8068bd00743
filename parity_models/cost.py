"""What a model costs per query, in multiply-accumulates (MACs) of its Linear and Conv2d layers,
counted by forward hooks on one zero query: how ``parm eval`` reports a parity model's cost beside
its accuracy (a parity query's MACs over a base query's, and the overhead that makes at k)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


@torch.no_grad()
def macs_per_query(model: nn.Module, input_shape: Sequence[int]) -> int | None:
    """MACs of one forward pass on a (1, *input_shape) query; None when the model has no Linear or
    Conv2d module to hook (an exported program runs its graph without them)."""
    total = [0]

    def linear(module: nn.Linear, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        total[0] += out.numel() * module.in_features  # each output: in_features multiply-adds

    def conv(module: nn.Conv2d, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        kh, kw = module.kernel_size
        total[0] += out.numel() * (module.in_channels // module.groups) * kh * kw

    hooks = [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, nn.Linear)]
    hooks += [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not hooks:
        return None
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total[0]


def cost_fields(base: nn.Module, parity: nn.Module, input_shape: Sequence[int], k: int,
                r: int = 1) -> dict[str, float | None]:
    """{"base_macs", "parity_macs", "parity_cost" (parity / base MACs), "overhead" (r parity queries
    per k data queries, at that cost)}; None where a model's MACs cannot be counted."""
    b, p = macs_per_query(base, input_shape), macs_per_query(parity, input_shape)
    ratio = p / b if b and p is not None else None
    return {"base_macs": b, "parity_macs": p, "parity_cost": ratio,
            "overhead": ratio * r / k if ratio is not None else None}
