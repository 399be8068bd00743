"""The Berrut code (training-free; after ApproxIFER and Berrut Approximated Coded Computing):
the k queries are the values of a Berrut rational interpolant at k data nodes, the r parity
queries its values at r other nodes, and parity workers run the unmodified base model. A missing
output is approximated by Berrut-interpolating the outputs that did arrive and evaluating at the
missing query's node. Systematic: data queries go out unchanged, so with no straggler every answer
is exact.

Nodes: the k + r Chebyshev points of the first kind on [-1, 1] (dense near the ends, where
rational interpolation errs most), in increasing order; the r parity nodes are spread evenly
among them (interleaved), so every missing data node has an arrived neighbour close by.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from coders.base import Array, Code, CodingError, combine, stack


def chebyshev_nodes(n: int) -> np.ndarray:
    """The n Chebyshev points of the first kind on [-1, 1], increasing."""
    return np.sort(np.cos((2 * np.arange(n) + 1) * np.pi / (2 * n)))


def berrut_weights(nodes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Berrut's first rational interpolant as weights: (len(at), len(nodes)) so that the
    interpolant of values v (n, ...) at the points ``at`` is weights @ v. ``nodes`` increasing;
    a point equal to a node takes that node's value."""
    signs = (-1.0) ** np.arange(len(nodes))
    diff = at[:, None] - nodes[None, :]  # (m, n)
    exact = np.isclose(diff, 0.0, atol=1e-15)
    with np.errstate(divide="ignore"):
        terms = signs / np.where(exact, 1.0, diff)
    weights = terms / terms.sum(axis=1, keepdims=True)
    hit = exact.any(axis=1)
    weights[hit] = exact[hit].astype(float)  # interpolation: exact at the nodes
    return weights


class BerrutCode(Code):
    name = "berrut"

    def __init__(self, k: int, r: int = 1) -> None:
        super().__init__(k, r)
        nodes = chebyshev_nodes(k + r)
        parity_pos = np.round((np.arange(r) + 1) * (k + r) / (r + 1) - 0.5).astype(int)  # interleaved
        data_pos = np.setdiff1d(np.arange(k + r), parity_pos)
        self.data_nodes, self.parity_nodes = nodes[data_pos], nodes[parity_pos]
        self.encoder = berrut_weights(self.data_nodes, self.parity_nodes).astype(np.float32)  # (r, k)

    def node(self, slot: int) -> float:
        """Position of a slot's query on the interpolation axis (data 0..k-1, parity k..k+r-1)."""
        return float(self.data_nodes[slot] if slot < self.k else self.parity_nodes[slot - self.k])

    def encode(self, queries: Array) -> Array:
        if queries.ndim < 2 or queries.shape[0] != self.k:
            raise CodingError(f"expected queries of shape (k={self.k}, B, ...), got {tuple(queries.shape)}")
        return combine(self.encoder, queries)  # (r, B, *S)

    def target(self, outputs: Array) -> Array:
        """What a perfect parity worker would return: the interpolant of the outputs at the parity
        nodes (r, B, C). With the base model as parity model this holds exactly only for linear F."""
        if outputs.ndim < 2 or outputs.shape[0] != self.k:
            raise CodingError(f"expected outputs of shape (k={self.k}, B, C), got {tuple(outputs.shape)}")
        return combine(self.encoder, outputs)

    def decode(self, available: Mapping[int, Array]) -> dict[int, Array]:
        missing = self.missing_data_slots(available)
        if not missing:
            return {}
        slots = sorted((s for s in available if 0 <= s < self.k + self.r), key=self.node)
        if len(missing) > self.r or len(slots) < self.k:
            raise CodingError(f"cannot decode: {len(missing)} data outputs missing and {len(slots)} outputs in "
                              f"(tolerates {self.r} erasures with k={self.k} outputs in)")
        nodes = np.array([self.node(s) for s in slots])
        weights = berrut_weights(nodes, np.array([self.node(m) for m in missing])).astype(np.float32)  # (|M|, n)
        stacked = stack([available[s] for s in slots])  # (n, B, C)
        decoded = combine(weights, stacked)  # (|M|, B, C)
        return {m: decoded[i] for i, m in enumerate(missing)}
