"""The coding group's decisions as a table: events in, answers out, no sockets or event loop."""
from __future__ import annotations

import numpy as np
import pytest

from coders import SumCode
from frontend.group import Group

Y = {i: np.full(3, float(i + 1), np.float32) for i in range(4)}  # data outputs F(X_i) = i+1
PARITY_K2 = Y[0] + Y[1]


def answers(deliveries):
    return [(d.slot, float(d.output[0]), d.degraded) for d in deliveries]


@pytest.mark.parametrize("events, expected, done", [
    # in order: each output answers its own query
    ([(0, Y[0]), (1, Y[1]), (2, PARITY_K2)], [[(0, 1.0, False)], [(1, 2.0, False)], []], True),
    # slot 1 straggles: parity + slot 0 decode it, flagged degraded; its late output is dropped
    ([(0, Y[0]), (2, PARITY_K2), (1, Y[1])], [[(0, 1.0, False)], [(1, 2.0, True)], []], True),
    # parity first, then slot 1: slot 0 decoded
    ([(2, PARITY_K2), (1, Y[1])], [[], [(1, 2.0, False), (0, 1.0, True)]], True),
    # only parity: nothing can be answered
    ([(2, PARITY_K2)], [[]], False),
    # duplicate output for a slot: ignored
    ([(0, Y[0]), (0, Y[0])], [[(0, 1.0, False)], []], False),
])
def test_k2_sum_decisions(events, expected, done) -> None:
    g = Group(2, SumCode(2))
    assert [answers(g.add_output(slot, out)) for slot, out in events] == expected
    assert g.done == done


def test_two_missing_of_k4_waits_and_a_failed_parity_decodes_nothing() -> None:
    g = Group(4, SumCode(4))
    parity = sum(Y.values())
    assert answers(g.add_output(0, Y[0])) == [(0, 1.0, False)]
    assert answers(g.add_output(4, parity)) == []
    assert answers(g.add_output(1, Y[1])) == [(1, 2.0, False)]  # slots 2, 3 still missing: no decode
    assert answers(g.add_output(2, Y[2])) == [(2, 3.0, False), (3, 4.0, True)]
    assert g.done

    g = Group(2, SumCode(2))
    g.add_output(0, Y[0])
    g.parity_failed(2)
    g.parity_failed(0)  # a data slot: not a parity that failed
    assert g.failed_parity == {2} and not g.can_decode() and g.decode_now() == []


def test_uncoded_group_only_answers_its_own_outputs() -> None:
    g = Group(1, None)
    assert not g.can_decode()
    assert answers(g.add_output(0, Y[0])) == [(0, 1.0, False)]
    assert g.done


def test_bad_slots_and_sizes() -> None:
    with pytest.raises(ValueError, match="exactly k=2"):
        Group(3, SumCode(2))
    with pytest.raises(ValueError, match="outside"):
        Group(2, SumCode(2)).add_output(3, Y[0])
