"""The contract every erasure code obeys: encode k queries into r parity queries,
state the parity model's training target, and decode missing outputs.

Shared by the frontend (serving) and parity_models (training), so the coding math exists once.
Every operation accepts numpy arrays (the frontend: no torch dispatch on its hot path) or torch
tensors (training), and returns the same kind. Slots are 0..k-1 for data, k..k+r-1 for parity.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


class CodingError(ValueError):
    """A coding operation was asked for something it cannot do (bad shape, too many erasures)."""


class Code(ABC):
    """An (k, r) code over batched tensors. Subclasses set ``name``."""

    name: str = ""

    def __init__(self, k: int, r: int = 1) -> None:
        if k < 1:
            raise CodingError(f"k must be >= 1, got {k}")
        if r < 1:
            raise CodingError(f"r must be >= 1, got {r}")
        self.k = k
        self.r = r

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, r={self.r})"

    def check_input_shape(self, shape: tuple[int, ...]) -> None:
        """Raise CodingError if queries of this per-query ``shape`` cannot be encoded."""

    @abstractmethod
    def encode(self, queries: Array) -> Array:
        """queries: (k, B, *S) -> parity queries (r, B, *S)."""

    @abstractmethod
    def target(self, outputs: Array) -> Array:
        """Base-model outputs (k, B, C) -> what the r parity models should output (r, B, C)."""

    @abstractmethod
    def decode(self, available: Mapping[int, Array]) -> dict[int, Array]:
        """Outputs by slot (each (B, C)) -> the missing data outputs by slot.

        Raises CodingError when the erasures exceed what the code tolerates.
        """

    def missing_data_slots(self, available: Mapping[int, Array]) -> list[int]:
        return [i for i in range(self.k) if i not in available]


class SubtractionCode(Code):
    """Codes whose parity model learns the sum of the k outputs; one missing output is
    recovered by subtraction: F(X_i) ~= F_P(P) - sum_{j != i} F(X_j)."""

    def __init__(self, k: int, r: int = 1) -> None:
        if r != 1:
            raise CodingError(f"{self.name} code supports r=1 only, got r={r}")
        super().__init__(k, r)

    def target(self, outputs: Array) -> Array:
        if outputs.ndim < 2 or outputs.shape[0] != self.k:
            raise CodingError(f"expected outputs of shape (k={self.k}, B, C), got {tuple(outputs.shape)}")
        return outputs.sum(axis=0, keepdims=True)  # (1, B, C)

    def decode(self, available: Mapping[int, Array]) -> dict[int, Array]:
        missing = self.missing_data_slots(available)
        if not missing:
            return {}
        if len(missing) > 1 or self.k not in available:
            raise CodingError(
                f"cannot decode: missing data slots {missing}, parity "
                f"{'present' if self.k in available else 'missing'} (tolerates one erasure)"
            )
        others = sum(available[j] for j in range(self.k) if j != missing[0])  # (B, C)
        return {missing[0]: available[self.k] - others}

    def decode_batch(self, data_out: Array, parity_out: Array, missing: int) -> Array:
        """Vectorised decode for training/eval: data_out (k, B, C), parity_out (B, C) -> (B, C)."""
        return parity_out - (data_out.sum(dim=0) - data_out[missing])
