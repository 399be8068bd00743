"""parity_models.cost: MACs per query of Linear and Conv2d layers, and a parity model's cost and
overhead beside its base (what parm eval reports with the accuracy)."""
from __future__ import annotations

from torch import nn

from parity_models.cost import cost_fields, macs_per_query
from parity_models.models import CollageMLP, TiledMLP, build


def test_linear_and_conv_macs() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))
    assert macs_per_query(mlp, (1, 28, 28)) == 784 * 100 + 100 * 10
    conv = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Flatten(), nn.Linear(6 * 28 * 28, 10))
    assert macs_per_query(conv, (1, 28, 28)) == 6 * 28 * 28 * 25 + 6 * 28 * 28 * 10
    assert macs_per_query(nn.Identity(), (3,)) is None


def test_a_tile_network_costs_k_passes_and_the_overhead_follows() -> None:
    base = build("mlp", {"input_shape": [1, 28, 28], "num_classes": 10})
    for cls in (TiledMLP, CollageMLP):
        backup = cls([1, 28, 28], 10, k=4)
        one_tile = sum(m.in_features * m.out_features for m in backup.g if isinstance(m, nn.Linear))
        assert macs_per_query(backup, (1, 28, 28)) == 4 * one_tile
        fields = cost_fields(base, backup, (1, 28, 28), k=4)
        assert fields["overhead"] == fields["parity_cost"] / 4
    same = cost_fields(base, build("mlp", {"input_shape": [1, 28, 28], "num_classes": 10}), (1, 28, 28), k=4)
    assert same["parity_cost"] == 1.0 and same["overhead"] == 0.25  # ParM's parity model: one base query
