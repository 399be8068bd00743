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

Stats = float | Sequence[float]


class Normalize(nn.Module):
    """(x - mean) / std, stored as buffers so they travel with the weights.

    Scalar statistics, or one per channel (a list) for (B, C, H, W) inputs.
    """

    def __init__(self, mean: Stats = 0.0, std: Stats = 1.0) -> None:
        super().__init__()
        self.register_buffer("mean", self._shape(mean))
        self.register_buffer("std", self._shape(std))

    @staticmethod
    def _shape(v: Stats) -> torch.Tensor:
        if isinstance(v, (int, float)):
            return torch.tensor(float(v))
        return torch.tensor([float(x) for x in v]).view(-1, 1, 1)  # (C, 1, 1) broadcasts over (B, C, H, W)

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
                 mean: Stats = 0.0, std: Stats = 1.0) -> None:
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


class LeNet5(nn.Module):
    """LeNet-5 (ReLU, max-pooling): conv5x5(6) -> pool -> conv5x5(16) -> pool -> 120 -> 84 -> classes.

    The first convolution pads by 2 so 28x28 and 32x32 inputs both work.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int = 10, mean: Stats = 0.0,
                 std: Stats = 1.0) -> None:
        super().__init__()
        c, h, w = input_shape
        flat = 16 * ((h // 2 - 4) // 2) * ((w // 2 - 4) // 2)  # (B, 16, h', w') after the second pool
        self.net = nn.Sequential(
            Normalize(mean, std),
            nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 6, H/2, W/2)
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, (H/2-4)/2, (W/2-4)/2)
            nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1-projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: a 3x3 stem without max-pooling, four stages of two BasicBlocks."""

    def __init__(self, input_shape: Sequence[int], num_classes: int = 10, mean: Stats = 0.0,
                 std: Stats = 1.0, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [Normalize(mean, std), nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]  # (B, 8*width) -> (B, C)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TiledMLP(nn.Module):
    """A parity model for the concat code: cut the tiled parity image back into its k tiles, run one
    shared MLP on every tile, return the tiles' outputs weighted by the code's row,
    sum_i w_i g(tile_i). The structure of the target (a weighted sum of per-image outputs) is built
    in, so the network only learns g ~ F on downsampled images; at k=8 on MNIST this beats an MLP
    on the whole tiled image by ~30 points (BENCHMARKS.md)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int = 10, k: int = 2,
                 weights: Sequence[float] | None = None, hidden: Sequence[int] = (256, 128),
                 mean: Stats = 0.0, std: Stats = 1.0) -> None:
        super().__init__()
        from coders.concat import ConcatCode  # the tiling geometry is the code's own

        c, h, w = input_shape
        self.tiles = ConcatCode(k).tiles(h, w)  # (top, bottom, left, right) per slot
        self.th = max(b - t for t, b, _, _ in self.tiles)
        self.tw = max(r - l for _, _, l, r in self.tiles)
        self.register_buffer("weights", torch.tensor(list(weights) if weights is not None else [1.0] * k))
        self.norm = Normalize(mean, std)
        layers: list[nn.Module] = [nn.Flatten()]
        width = c * self.th * self.tw
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.g = nn.Sequential(*layers, nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        x = self.norm(x)
        crops = [nn.functional.pad(x[:, :, t:b, l:r], (0, self.tw - (r - l), 0, self.th - (b - t)))
                 for t, b, l, r in self.tiles]  # k x (B, C, th, tw), smaller tiles zero-padded
        per_tile = self.g(torch.stack(crops, 1).flatten(0, 1)).view(x.shape[0], len(self.tiles), -1)  # (B, k, C)
        return torch.einsum("bkc,k->bc", per_tile, self.weights.to(per_tile.dtype))


class CollageMLP(TiledMLP):
    """The collage code's backup model: TiledMLP's shared per-tile network g, but its outputs are
    the k tiles' predictions side by side, (B, k*C), each read directly as that slot's answer
    (coders.collage). Costs what TiledMLP costs: k passes of g over thumbnails."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, k*classes)
        x = self.norm(x)
        crops = [nn.functional.pad(x[:, :, t:b, l:r], (0, self.tw - (r - l), 0, self.th - (b - t)))
                 for t, b, l, r in self.tiles]
        return self.g(torch.stack(crops, 1).flatten(0, 1)).view(x.shape[0], -1)  # (B*k, C) -> (B, k*C)


ARCHS: dict[str, Callable[..., nn.Module]] = {"linear": Linear, "mlp": MLP, "lenet5": LeNet5, "resnet18": ResNet18,
                                              "tiled": TiledMLP, "collage": CollageMLP}


def build(arch: str, args: dict[str, Any]) -> nn.Module:
    """Instantiate architecture ``arch`` with keyword ``args``; ValueError names known ones."""
    try:
        factory = ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))}") from None
    return factory(**args)
