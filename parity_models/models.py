"""Model architectures, by name, for base models and parity models alike.

Every architecture takes raw inputs (pixels in [0, 1], shape (B, *input_shape)) and applies its
own normalisation first, so workers feed request tensors to ``forward`` unchanged.
``build(arch, args)`` is how a checkpoint is turned back into a module.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std with scalar statistics, stored as buffers so they travel with the weights."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Linear(nn.Module):
    """A single affine map of the flattened input: the model for which decoding is exact."""

    def __init__(self, input_shape: Sequence[int], num_classes: int = 10, bias_scale: float = 1.0) -> None:
        super().__init__()
        self.fc = nn.Linear(math.prod(input_shape), num_classes)
        self.bias_scale = float(bias_scale)  # parity model of a sum code over k: bias_scale = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *S) -> (B, C)
        return nn.functional.linear(x.flatten(1), self.fc.weight, self.fc.bias * self.bias_scale)


class MLP(nn.Module):
    """ParM's base-mlp: flatten -> 200 -> 100 -> classes with ReLU."""

    def __init__(self, input_shape: Sequence[int], num_classes: int = 10, hidden: Sequence[int] = (200, 100),
                 mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


ARCHS: dict[str, Callable[..., nn.Module]] = {"linear": Linear, "mlp": MLP}


def build(arch: str, args: dict[str, Any]) -> nn.Module:
    """Instantiate architecture ``arch`` with keyword ``args``; ValueError names known ones."""
    try:
        factory = ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))}") from None
    return factory(**args)
