"""The concatenation code for images: the k images are each downsampled (area averaging) and
tiled into one image of the original size, which the parity model reads; decode by subtraction.

Tiling grid: cols = ceil(sqrt(k)), rows = ceil(k / cols). So k=2 is side by side (each image
squeezed to H x W/2, as in ParM), k=4 is quadrants (H/2 x W/2), and k=3 uses the 2x2 grid with
the fourth tile left black: isotropic 14x14 tiles keep digits undistorted, where three 28x9
strips would squeeze them threefold. Larger k continue the same rule (k<=9: 3x3, ...).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from coders.base import CodingError, SubtractionCode


def grid_for(k: int) -> tuple[int, int]:
    """(rows, cols) of the tiling for k images."""
    cols = math.ceil(math.sqrt(k))
    return math.ceil(k / cols), cols


def _bounds(size: int, parts: int) -> list[int]:
    """Integer tile boundaries splitting ``size`` into ``parts`` near-equal pieces."""
    return [round(i * size / parts) for i in range(parts + 1)]


class ConcatCode(SubtractionCode):
    name = "concat"

    def __init__(self, k: int, r: int = 1) -> None:
        super().__init__(k, r)
        self.rows, self.cols = grid_for(k)

    def check_input_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) not in (2, 3):
            raise CodingError(f"concat code needs image queries (C, H, W) or (H, W), got shape {shape}")
        h, w = shape[-2], shape[-1]
        if h < self.rows or w < self.cols:
            raise CodingError(f"image {h}x{w} too small to tile {self.k} images in a {self.rows}x{self.cols} grid")

    def tiles(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """(top, bottom, left, right) of the tile for each of the k slots, row-major."""
        rb, cb = _bounds(h, self.rows), _bounds(w, self.cols)
        return [(rb[i // self.cols], rb[i // self.cols + 1], cb[i % self.cols], cb[i % self.cols + 1])
                for i in range(self.k)]

    def encode(self, queries: torch.Tensor) -> torch.Tensor:
        if queries.dim() < 3 or queries.shape[0] != self.k:
            raise CodingError(f"expected queries of shape (k={self.k}, B, [C,] H, W), got {tuple(queries.shape)}")
        self.check_input_shape(tuple(queries.shape[2:]))
        squeeze = queries.dim() == 4  # (k, B, H, W): add a channel axis
        x = queries.unsqueeze(2) if squeeze else queries  # (k, B, C, H, W)
        h, w = x.shape[-2:]
        out = x.new_zeros(x.shape[1:])  # (B, C, H, W)
        for i, (t, b, l, r) in enumerate(self.tiles(h, w)):
            out[:, :, t:b, l:r] = F.adaptive_avg_pool2d(x[i], (b - t, r - l))
        out = out.unsqueeze(0)  # (1, B, C, H, W)
        return out.squeeze(2) if squeeze else out
