"""Erasure codes over batched tensors: a registry from name to Code class.

The frontend encodes parity queries and decodes missing outputs with these; parity_models
trains towards their targets. This package imports nothing else of the project.
"""
from __future__ import annotations

from coders.base import Code, CodingError, LinearCode
from coders.berrut import BerrutCode
from coders.collage import CollageCode
from coders.concat import ConcatCode
from coders.summation import SumCode

CODES: dict[str, type[Code]] = {SumCode.name: SumCode, ConcatCode.name: ConcatCode, BerrutCode.name: BerrutCode,
                               CollageCode.name: CollageCode}


def make_code(name: str, k: int, r: int = 1) -> Code:
    """Build the code called ``name``; raises CodingError naming the known codes otherwise."""
    try:
        cls = CODES[name]
    except KeyError:
        raise CodingError(f"unknown code {name!r}; known: {', '.join(sorted(CODES))}") from None
    return cls(k, r)


__all__ = ["CODES", "BerrutCode", "CollageCode", "Code", "CodingError", "ConcatCode", "LinearCode", "SumCode", "make_code"]
