"""The concatenation code for images: the k images are each downsampled (area averaging) and
tiled into one image of the original size, which the parity model reads; decode by subtraction.
With r >= 2 every parity worker reads the same tiled image and its model learns another weighted
sum of the outputs (coders.base.LinearCode).

Tiling grid: cols = ceil(sqrt(k)), rows = ceil(k / cols). So k=2 is side by side (each image
squeezed to H x W/2, as in ParM), k=4 is quadrants (H/2 x W/2), and k=3 uses the 2x2 grid with
the fourth tile left black: isotropic 14x14 tiles keep digits undistorted, where three 28x9
strips would squeeze them threefold. Larger k continue the same rule (k<=9: 3x3, ...).

numpy images are tiled with numpy alone (sizes the grid does not divide included: ``adaptive_pool``
matches torch's adaptive_avg_pool2d), torch tensors with torch, imported only then.
"""
from __future__ import annotations

import math

import numpy as np

from coders.base import Array, CodingError, LinearCode, torch_module


def grid_for(k: int) -> tuple[int, int]:
    """(rows, cols) of the tiling for k images."""
    cols = math.ceil(math.sqrt(k))
    return math.ceil(k / cols), cols


def _bounds(size: int, parts: int) -> list[int]:
    """Integer tile boundaries splitting ``size`` into ``parts`` near-equal pieces."""
    return [round(i * size / parts) for i in range(parts + 1)]


class ConcatCode(LinearCode):
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

    def encode(self, queries: Array) -> Array:
        if queries.ndim < 3 or queries.shape[0] != self.k:
            raise CodingError(f"expected queries of shape (k={self.k}, B, [C,] H, W), got {tuple(queries.shape)}")
        self.check_input_shape(tuple(queries.shape[2:]))
        squeeze = queries.ndim == 4  # (k, B, H, W): add a channel axis
        x = queries[:, :, None] if squeeze else queries  # (k, B, C, H, W)
        h, w = x.shape[-2:]
        out = self._tile_even(x) if h % self.rows == 0 and w % self.cols == 0 else self._tile_any(x)
        out = out[None]  # (1, B, C, H, W)
        if self.r > 1:  # one tiled image for every parity model: (r, B, C, H, W)
            out = np.repeat(out, self.r, axis=0) if isinstance(out, np.ndarray) else out.expand(self.r, *out.shape[1:])
        return out[:, :, 0] if squeeze else out

    def _tile_even(self, x: Array) -> Array:
        """All k images pooled in one block mean and tiled by one transpose (the grid divides the
        image): (k, B, C, H, W) -> (B, C, H, W). Empty tiles of a partial grid stay black."""
        k, bsz, c, h, w = x.shape
        rows, cols = self.rows, self.cols
        th, tw = h // rows, w // cols
        pooled = x.reshape(k, bsz, c, th, rows, tw, cols).mean(axis=(4, 6))  # (k, B, C, th, tw)
        if k < rows * cols:
            pad_shape = (rows * cols - k, bsz, c, th, tw)
            if isinstance(x, np.ndarray):
                pooled = np.concatenate([pooled, np.zeros(pad_shape, dtype=pooled.dtype)])
            else:
                torch = torch_module()
                pooled = torch.cat([pooled, torch.zeros(pad_shape, dtype=pooled.dtype, device=pooled.device)])
        grid = pooled.reshape(rows, cols, bsz, c, th, tw)
        axes = (2, 3, 0, 4, 1, 5)  # -> (B, C, rows, th, cols, tw)
        grid = grid.transpose(axes) if isinstance(grid, np.ndarray) else grid.permute(axes)
        return grid.reshape(bsz, c, h, w)

    def _tile_any(self, x: Array) -> Array:
        """Tile by tile, for sizes the grid does not divide: (k, B, C, H, W) -> (B, C, H, W)."""
        h, w = x.shape[-2:]
        out = np.zeros_like(x[0]) if isinstance(x, np.ndarray) else torch_module().zeros_like(x[0])
        for i, (t, b, l, r) in enumerate(self.tiles(h, w)):
            out[:, :, t:b, l:r] = _area_downsample(x[i], b - t, r - l)
        return out


def _area_downsample(img: Array, th: int, tw: int) -> Array:
    """(B, C, H, W) -> (B, C, th, tw) by area averaging. When the factors are whole numbers (the
    usual case: 28 -> 14) it is a block mean, the same in numpy and torch; otherwise adaptive
    average pooling, whose windows overlap as the sizes require (numpy: ``adaptive_pool``)."""
    bsz, c, h, w = img.shape
    if h % th == 0 and w % tw == 0:
        return img.reshape(bsz, c, th, h // th, tw, w // tw).mean(axis=(3, 5))
    if isinstance(img, np.ndarray):
        return adaptive_pool(img, th, tw)
    return torch_module().nn.functional.adaptive_avg_pool2d(img, (th, tw))


def pool_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) averaging weights of adaptive average pooling along one axis: output i is the
    mean of inputs floor(i * size / out) .. ceil((i + 1) * size / out) - 1, torch's windows."""
    i = np.arange(out)
    start, end = (i * size) // out, -((-(i + 1) * size) // out)  # floor, ceil
    cols = np.arange(size)
    inside = (cols[None, :] >= start[:, None]) & (cols[None, :] < end[:, None])
    return inside / (end - start)[:, None]


def adaptive_pool(img: np.ndarray, th: int, tw: int) -> np.ndarray:
    """numpy adaptive_avg_pool2d: (..., H, W) -> (..., th, tw), each output the mean of its window
    (rows by ``pool_matrix(H, th)``, columns by ``pool_matrix(W, tw)``). Floating inputs keep their
    dtype; others give float64, as numpy's mean does."""
    dtype = img.dtype if np.issubdtype(img.dtype, np.floating) else np.float64
    rows = pool_matrix(img.shape[-2], th).astype(dtype)
    cols = pool_matrix(img.shape[-1], tw).astype(dtype)
    return rows @ img.astype(dtype, copy=False) @ cols.T
