"""The sum code: parity query P = X_1 + ... + X_k; decode by subtraction.

Works for queries of any shape; exact for a linear model whose parity model is the same map
with k times the bias.
"""
from __future__ import annotations

from coders.base import Array, CodingError, SubtractionCode


class SumCode(SubtractionCode):
    name = "sum"

    def encode(self, queries: Array) -> Array:
        if queries.ndim < 2 or queries.shape[0] != self.k:
            raise CodingError(f"expected queries of shape (k={self.k}, B, ...), got {tuple(queries.shape)}")
        return queries.sum(axis=0, keepdims=True)  # (1, B, *S)
