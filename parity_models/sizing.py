"""Sizing a backup network to a cost: the widest per-tile network (tiled or collage) whose parity query costs
at most a given number of base queries in MACs (``parm train-parity --cost-budget C``), so schemes can be
compared at equal compute. Place in the flow: parity_build (before the module is built) -> train.py.
"""
from __future__ import annotations

from typing import Any

from parity_models import checkpoint
from parity_models.errors import SetupError
from parity_models.cost import macs_per_query
from parity_models.models import build

SIZED_ARCHS = ("tiled", "collage")
MAX_WIDTH = 4096  # the first hidden layer's widest; the second is half of it, as in the default (256, 128)


def _hidden(width: int) -> tuple[int, int]:
    return width, max(1, width // 2)


def _macs(name: str, args: dict[str, Any], width: int) -> int:
    macs = macs_per_query(build(name, {**args, "hidden": _hidden(width)}), args["input_shape"])
    assert macs is not None  # tiled and collage are Linear layers
    return macs


def fit_hidden(base_ckpt: dict[str, Any], name: str, args: dict[str, Any], budget: float) -> tuple[int, int]:
    """Hidden widths (h, h // 2) of backup network ``name`` with ``args``: the largest h <= MAX_WIDTH whose
    MACs per query are at most ``budget`` x the base model's. SetupError when none fits or the base's MACs
    cannot be counted (an exported program)."""
    if name not in SIZED_ARCHS:
        raise SetupError(f"--cost-budget sizes the {' and '.join(SIZED_ARCHS)} backup networks, not {name!r}")
    if not budget > 0:
        raise SetupError(f"--cost-budget must be > 0 base queries, got {budget}")
    base_macs = macs_per_query(checkpoint.build_model(base_ckpt), base_ckpt["input_shape"])
    if not base_macs:
        raise SetupError("--cost-budget needs the base model's MACs, and this base has no Linear or Conv2d "
                         "layers to count (an exported program runs as one graph)")
    limit = budget * base_macs
    if _macs(name, args, 1) > limit:
        raise SetupError(f"even a 1-unit {name} network costs {_macs(name, args, 1) / base_macs:.3g} base "
                         f"queries, above --cost-budget {budget}")
    lo, hi = 1, MAX_WIDTH  # invariant: lo fits; MACs grow with the width
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _macs(name, args, mid) <= limit else (lo, mid - 1)
    return _hidden(lo)
