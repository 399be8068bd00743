"""The Berrut code: systematic (exact with no straggler), interpolation error shrinking as the
nodes densify, decoding up to r missing outputs from the right nodes, numpy and torch alike."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from coders import BerrutCode, CodingError
from coders.berrut import berrut_weights, chebyshev_nodes
from frontend.group import Group


def decode_error(k: int, r: int, missing: list[int], f=lambda z: np.sin(3 * z)) -> float:
    """Queries X_j = data node j (scalars); F = f elementwise; parity workers run F unchanged.
    Returns the worst error of the decoded outputs against F(X_m)."""
    code = BerrutCode(k, r)
    x = code.data_nodes.reshape(k, 1, 1)                  # (k, B=1, 1)
    parity_queries = code.encode(x)                        # (r, 1, 1)
    outs = {j: f(x[j]) for j in range(k) if j not in missing} | {k + i: f(parity_queries[i]) for i in range(r)}
    decoded = code.decode(outs)
    assert sorted(decoded) == sorted(missing)
    return max(float(np.abs(decoded[m] - f(x[m])).max()) for m in missing)


def test_systematic_no_straggler_means_exact_answers() -> None:
    code = BerrutCode(4, 2)
    outputs = np.random.default_rng(0).random((4, 10)).astype(np.float32)
    g = Group(4, code)
    answers = [d for j in range(4) for d in g.add_output(j, outputs[j])]
    assert [(d.slot, d.degraded) for d in answers] == [(j, False) for j in range(4)]
    assert all(np.array_equal(d.output, outputs[d.slot]) for d in answers)


def test_interpolation_error_shrinks_as_nodes_densify() -> None:
    errors = [decode_error(k, 1, [k // 2]) for k in (4, 8, 16, 32)]
    assert errors[0] > errors[1] > errors[2] > errors[3], errors
    assert errors[-1] < 0.05


def test_constant_outputs_are_decoded_exactly_with_r_missing() -> None:
    # Berrut's weights sum to one: whatever nodes are used, a constant comes back exactly
    assert decode_error(8, 2, [1, 6], f=lambda z: np.full_like(z, 0.7)) < 1e-6


def test_decoding_with_r_missing_uses_the_right_nodes() -> None:
    code = BerrutCode(8, 2)
    # outputs equal to their node's position: each decoded value must land near its own node
    outs = {s: np.array([[code.node(s)]]) for s in range(10) if s not in (2, 5)}
    decoded = code.decode(outs)
    for m in (2, 5):
        others = [abs(decoded[m][0, 0] - code.node(s)) for s in range(8) if s != m]
        assert abs(decoded[m][0, 0] - code.node(m)) < min(others)
    with pytest.raises(CodingError, match="tolerates 2 erasures"):
        code.decode({s: np.zeros((1, 1)) for s in range(10) if s not in (0, 1, 2)})


def test_parity_nodes_interleave_and_weights_interpolate() -> None:
    code = BerrutCode(8, 2)
    assert sorted(list(code.data_nodes) + list(code.parity_nodes)) == list(chebyshev_nodes(10))
    assert code.data_nodes.min() < code.parity_nodes.min() and code.parity_nodes.max() < code.data_nodes.max()
    w = berrut_weights(code.data_nodes, code.data_nodes)
    assert np.allclose(w, np.eye(8))  # at its nodes, the interpolant is the data itself
    assert np.allclose(code.encoder.sum(axis=1), 1.0, atol=1e-6)


def test_numpy_and_torch_agree() -> None:
    code = BerrutCode(4, 2)
    x = torch.rand(4, 3, 1, 28, 28)
    np.testing.assert_allclose(code.encode(x).numpy(), code.encode(x.numpy()), rtol=1e-5, atol=1e-6)
    outs = {s: torch.rand(3, 10) for s in (0, 2, 3, 4, 5)}
    np.testing.assert_allclose(code.decode(outs)[1].numpy(), code.decode({s: v.numpy() for s, v in outs.items()})[1],
                               rtol=1e-5, atol=1e-6)
