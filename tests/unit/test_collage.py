"""The collage code (coders.collage): the concat code's tiling, a parity output that holds each
tile's own prediction, read directly for any number of missing slots; numpy and torch alike."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from coders import CodingError, make_code
from frontend.group import Group


def test_target_and_decode_are_inverse_for_any_missing_slots() -> None:
    code = make_code("collage", 4)
    out = np.random.default_rng(0).normal(size=(4, 3, 10)).astype(np.float32)  # (k, B, C)
    parity = code.target(out)[0]  # (B, k*C)
    assert parity.shape == (3, 40)
    decoded = code.decode({1: out[1], 4: parity})  # slots 0, 2, 3 missing: one parity answers all
    assert sorted(decoded) == [0, 2, 3]
    for m, value in decoded.items():
        np.testing.assert_array_equal(value, out[m])
    t = torch.from_numpy(out)
    assert torch.equal(code.target(t)[0], torch.from_numpy(parity))
    assert torch.equal(code.decode_batch(None, torch.from_numpy(parity), 2), t[2])


def test_encode_is_the_concat_tiling() -> None:
    x = np.random.default_rng(1).random((2, 5, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(make_code("collage", 2).encode(x), make_code("concat", 2).encode(x))


def test_errors_are_clear() -> None:
    with pytest.raises(CodingError, match="one parity output"):
        make_code("collage", 4, 2)
    code = make_code("collage", 2)
    with pytest.raises(CodingError, match="no parity output"):
        code.decode({0: np.zeros((1, 10))})
    with pytest.raises(CodingError, match="k\\*C values"):
        code.decode({0: np.zeros((1, 10)), 2: np.zeros((1, 11))})


def test_a_group_decodes_two_missing_slots_from_one_collage_parity() -> None:
    code = make_code("collage", 3)
    out = np.random.default_rng(2).normal(size=(3, 1, 4)).astype(np.float32)
    group = Group(3, code)
    assert group.add_output(0, out[0, 0]) and not group.can_decode()  # no parity yet
    delivered = group.add_output(3, code.target(out)[0, 0])  # the parity: slots 1 and 2 both rebuilt
    assert sorted(d.slot for d in delivered if d.degraded) == [1, 2]
    for d in delivered:
        if d.degraded:
            np.testing.assert_array_equal(d.output, out[d.slot, 0])
    assert group.done
    summed = Group(2, make_code("sum", 2))
    assert summed.add_output(2, np.zeros(4, np.float32)) == [] and not summed.can_decode()  # 2 missing, 1 parity
