"""The collage code (after "Collage inference", Narra et al. 2019, and ParM's cheap backup model):
the k images are tiled into one as the concat code tiles them, and the parity worker runs a backup
model that answers every tile on its own. Its output holds the k tiles' predictions side by side,
(B, k*C), and a missing slot's answer is read from its tile's part directly: no subtraction, so
the other outputs' errors do not add to it, and any number of missing data slots is answered
from one parity output. r = 1. The backup model is parity_models.models.CollageMLP.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from coders.base import Array, CodingError
from coders.concat import ConcatCode


class CollageCode(ConcatCode):
    name = "collage"

    def __init__(self, k: int, r: int = 1) -> None:
        if r != 1:
            raise CodingError(f"the collage code has one parity output (it answers all k tiles); got r={r}")
        super().__init__(k, 1)

    def can_decode(self, missing: int, parities: int) -> bool:
        return missing == 0 or parities >= 1

    def target(self, outputs: Array) -> Array:
        """(k, B, C) base outputs -> (1, B, k*C): each tile's own prediction, in slot order."""
        if outputs.ndim != 3 or outputs.shape[0] != self.k:
            raise CodingError(f"expected outputs of shape (k={self.k}, B, C), got {tuple(outputs.shape)}")
        k, b, c = outputs.shape
        per_query = outputs.transpose(1, 0, 2) if isinstance(outputs, np.ndarray) else outputs.permute(1, 0, 2)
        return per_query.reshape(1, b, k * c)  # (B, k, C) -> (1, B, k*C)

    def decode(self, available: Mapping[int, Array]) -> dict[int, Array]:
        missing = self.missing_data_slots(available)
        if not missing:
            return {}
        if self.k not in available:
            raise CodingError(f"cannot decode: missing data slots {missing} and no parity output")
        return {m: self.decode_batch(None, available[self.k], m) for m in missing}

    def decode_batch(self, data_out: Array | None, parity_out: Array, missing: int, index: int = 0) -> Array:
        """parity_out (B, k*C) -> slot ``missing``'s part (B, C); ``data_out`` is not needed."""
        c, rest = divmod(parity_out.shape[-1], self.k)
        if rest or not c:
            raise CodingError(f"a collage parity output has k*C values per query; "
                              f"got {parity_out.shape[-1]} for k={self.k}")
        return parity_out[..., missing * c:(missing + 1) * c]
