"""parity_models.sizing (``parm train-parity --cost-budget C``): a tiled or collage backup network sized to at
most C base queries of MACs, the widest that fits, recorded in its arch_args; clear errors otherwise."""
from __future__ import annotations

import pytest
import torch

from coders import make_code
from parity_models import checkpoint
from parity_models.cost import macs_per_query
from parity_models.models import build
from parity_models.parity_build import build_parity
from parity_models.sizing import fit_hidden

SHAPE = [1, 28, 28]


def _base(arch: str = "mlp") -> dict:
    args = {"input_shape": SHAPE, "num_classes": 10}
    return checkpoint.make_checkpoint(build(arch, args), kind="base", arch=arch, arch_args=args, input_shape=SHAPE,
                                      num_classes=10)


@pytest.mark.parametrize(("arch", "code", "k", "budget"), [("tiled", "concat", 4, 1.0), ("collage", "collage", 8, 1.0),
                                                           ("tiled", "concat", 2, 0.5)])
def test_the_widest_network_within_the_budget(arch: str, code: str, k: int, budget: float) -> None:
    base = _base()
    base_macs = macs_per_query(checkpoint.build_model(base), SHAPE)
    parity = build_parity(base, arch, None, make_code(code, k), torch.rand(64, *SHAPE), cost_budget=budget)
    width, second = parity.arch_args["hidden"]
    assert second == width // 2
    assert macs_per_query(parity.module, SHAPE) <= budget * base_macs
    wider = build(arch, {**parity.arch_args, "hidden": (width + 1, (width + 1) // 2)})
    assert macs_per_query(wider, SHAPE) > budget * base_macs  # one unit more would not fit
    rebuilt = build(parity.arch, parity.arch_args)  # a checkpoint rebuilds the same sized network
    assert macs_per_query(rebuilt, SHAPE) == macs_per_query(parity.module, SHAPE)


def test_a_cnn_base_buys_a_wider_backup_than_an_mlp() -> None:
    args = {"input_shape": SHAPE, "num_classes": 10, "k": 4, "weights": [1.0] * 4}
    mlp_width = fit_hidden(_base("mlp"), "tiled", args, 1.0)[0]
    assert fit_hidden(_base("lenet5"), "tiled", args, 1.0)[0] > mlp_width


@pytest.mark.parametrize(("arch", "budget", "message"), [("same", 1.0, "sizes the tiled and collage"),
                                                         ("tiled", 0.0, "must be > 0"),
                                                         ("tiled", 1e-4, "even a 1-unit tiled network")])
def test_unusable_budgets_are_clear_errors(arch: str, budget: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_parity(_base(), arch, None, make_code("concat", 4), torch.rand(16, *SHAPE), cost_budget=budget)
