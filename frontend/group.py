"""A coding group as a pure state machine: no I/O, no event loop, no clock.

Slots 0..k-1 hold data outputs, k..k+r-1 parity outputs. Each event (an output arrived) returns
the answers it makes possible: the slot's own output, and, when exactly the erased outputs are
missing and the code can rebuild them, the decoded ones flagged degraded. Late outputs for slots
already answered are ignored. The idea follows clipper-parm's DecodingGroup, without its I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coders import Code, CodingError


@dataclass(frozen=True)
class Delivery:
    slot: int
    output: np.ndarray  # (C,)
    degraded: bool


class Group:
    """State of one group of ``n`` data slots (n == code.k when coded) and ``r`` parity slots.

    ``code`` is None for an uncoded group (a partial group, or equal/none modes).
    """

    def __init__(self, n: int, code: Code | None = None) -> None:
        if code is not None and n != code.k:
            raise ValueError(f"a coded group needs exactly k={code.k} data slots, got {n}")
        self.n = n
        self.code = code
        self.r = code.r if code is not None else 0
        self.outputs: dict[int, np.ndarray] = {}   # slot -> (C,) output from a worker
        self.answered: set[int] = set()             # data slots whose query has its answer
        self.failed_parity: set[int] = set()       # parity slots that will never have an output
        self.parities_in = 0                        # parity outputs received (most groups ask before any)

    @property
    def done(self) -> bool:
        return len(self.answered) == self.n

    def is_parity(self, slot: int) -> bool:
        return self.n <= slot < self.n + self.r

    def add_output(self, slot: int, output: np.ndarray, decode: bool = True) -> list[Delivery]:
        """A worker's output for ``slot`` arrived; returns the answers it unlocks (with
        ``decode=False``, only the slot's own: the caller decodes later with ``decode_now``)."""
        if not 0 <= slot < self.n + self.r:
            raise ValueError(f"slot {slot} outside 0..{self.n + self.r - 1}")
        if slot in self.outputs or slot in self.answered:
            return []  # a late or duplicate output: the slot is settled
        self.outputs[slot] = output
        out: list[Delivery] = []
        if slot < self.n:
            self.answered.add(slot)
            out.append(Delivery(slot, output, degraded=False))
        else:
            self.parities_in += 1
        return out + self.decode_now() if decode else out

    def parity_failed(self, slot: int) -> None:
        """The parity slot cannot produce an output (no parity worker, or it errored)."""
        if self.is_parity(slot):
            self.failed_parity.add(slot)

    def can_decode(self) -> bool:
        """Some data slot is unanswered and enough outputs are in to try rebuilding it."""
        if self.code is None or not self.parities_in:  # every code needs a parity output to rebuild anything
            return False
        missing = self.n - len(self.answered)
        return missing > 0 and self.code.can_decode(missing, self.parities_in)

    def decode_now(self) -> list[Delivery]:
        """Rebuild the unanswered data slots if the code can; their answers, flagged degraded."""
        if not self.can_decode():
            return []
        assert self.code is not None
        available = {s: v[None] for s, v in self.outputs.items()}  # (1, C) each, numpy
        try:
            decoded = self.code.decode(available)
        except CodingError:
            return []  # e.g. a code whose parities cannot rebuild this erasure pattern
        out = []
        for slot, value in decoded.items():
            if slot not in self.answered:
                self.answered.add(slot)
                out.append(Delivery(slot, value[0], degraded=True))
        return out
