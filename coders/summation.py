"""The sum code: parity query l is the weighted sum P_l = sum_i C[l, i] X_i of the k queries
(row 0: the plain sum X_1 + ... + X_k, ParM's addition code); decode by subtraction, or by a small
linear solve with r >= 2 parities (coders.base.LinearCode).

Works for queries of any shape; exact for a linear model whose parity model l is the same map
with sum_i C[l, i] times the bias.
"""
from __future__ import annotations

from coders.base import Array, CodingError, LinearCode, combine


class SumCode(LinearCode):
    name = "sum"

    def encode(self, queries: Array) -> Array:
        if queries.ndim < 2 or queries.shape[0] != self.k:
            raise CodingError(f"expected queries of shape (k={self.k}, B, ...), got {tuple(queries.shape)}")
        return combine(self.coeffs, queries)  # (r, B, *S); row 0 is the sum
