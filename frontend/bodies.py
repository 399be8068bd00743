"""Request bodies -> Python values, every failure a BadRequest: JSON through orjson (no recursion,
nesting capped at 1,024 levels, ~5x faster than the json module), msgpack within its limits; tensor
shapes checked dim by dim with exact integers; values echoed in errors through a bounded repr."""
from __future__ import annotations

import asyncio
import math
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack
import numpy as np
import orjson

from frontend.errors import BadRequest
from workers.protocol import ALLOWED_DTYPES

T = TypeVar("T")
# Bodies from this size up are parsed in a thread. The parsers hold the GIL, but the loop gets it
# back between their calls (parse, conversion to float32, freeing the lists), so it waits for the
# longest of them rather than their sum: for 16 MB of JSON ~65 ms instead of ~115 ms at a time
# (benchmarks/body_parse_loop.py). Below this size a thread hop (~100 us) costs more than it saves.
OFF_LOOP_BYTES = 1 << 20
MAX_DIMS = 64              # numpy's limit: a shape with more dimensions cannot be an array
MAX_TEXT = 200             # error messages quote at most this much of what a client sent
UTF8_BOM = b"\xef\xbb\xbf"
NON_FINITE_LITERALS = ("NaN", "Infinity")
_WIRE_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in ALLOWED_DTYPES}  # tensors travel little-endian

_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother, _short.maxlong = 3, 60, 60, 40
_short.maxlist = _short.maxtuple = _short.maxdict = 8


def describe(value: Any) -> str:
    """repr() of a client's value, bounded in depth and length (a plain repr of a 1,000-level list
    raises RecursionError, and echoing a megabyte string would bloat the error)."""
    return _short.repr(value)


def brief(exc: BaseException) -> str:
    """An exception's message, cut to MAX_TEXT (numpy quotes the offending string in full)."""
    text = str(exc)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


async def parse_off_loop(nbytes: int, parse: Callable[[], T]) -> T:
    """``parse()`` on the loop for a small body, in the default thread pool for a big one."""
    if nbytes < OFF_LOOP_BYTES:
        return parse()
    return await asyncio.get_running_loop().run_in_executor(None, parse)


def loads_json(raw: bytes | memoryview, what: str = "JSON body") -> Any:
    """JSON bytes -> value. NaN and Infinity are not JSON: orjson refuses them, and so do we, by name."""
    data = memoryview(raw)
    if data[:len(UTF8_BOM)] == UTF8_BOM:  # the json module accepted a byte order mark: keep accepting it
        data = data[len(UTF8_BOM):]
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if _non_finite_at(exc.doc, exc.pos):
            raise BadRequest(f"{what} contains NaN or Infinity, which are not JSON numbers; inputs must be finite "
                             "(a NaN in a coded group would spread into other clients' decoded answers)") from None
        raise BadRequest(f"malformed {what}: {brief(exc)}") from None


def _non_finite_at(doc: str, pos: int) -> bool:
    # orjson stops at the literal itself, or just after the sign of -Infinity
    return doc.startswith(NON_FINITE_LITERALS, pos) or doc.startswith(NON_FINITE_LITERALS, max(pos - 1, 0))


def loads_msgpack(raw: bytes) -> Any:
    """msgpack bytes -> value. Nesting is capped by the unpacker's stack (StackError past 1,024 levels);
    RecursionError only from msgpack's pure-Python fallback, when its C extension is missing."""
    try:
        return msgpack.unpackb(raw, raw=False)
    except (ValueError, RecursionError) as exc:  # ExtraData, FormatError, StackError are ValueErrors
        raise BadRequest(f"malformed msgpack body: {brief(exc) or type(exc).__name__}") from None


def shape_size(shape: Any, what: str) -> int:
    """A tensor shape -> its number of elements, exact (math.prod on Python ints: np.prod wraps at
    2**64, so [2**32, 2**32] would claim 0 elements). BadRequest unless a list of at most MAX_DIMS
    non-negative integers (booleans are not dimensions)."""
    if not isinstance(shape, list):
        raise BadRequest(f"{what} {describe(shape)} must be a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise BadRequest(f"{what} has {len(shape)} dimensions; at most {MAX_DIMS}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        # orjson reads integers past 2**64 as floats: those land here too, hence the bound in the message
        raise BadRequest(f"{what} {describe(shape)} must be a list of non-negative integers (each below 2**64)")
    return math.prod(shape)


def tensor_map(obj: dict[str, Any]) -> np.ndarray:
    """A msgpack tensor map {dtype, shape, data} -> array, each field checked here first so that a
    refusal names the field (and never quotes a deep value in full)."""
    dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        known = ", ".join(sorted(ALLOWED_DTYPES))
        raise BadRequest(f"tensor dtype {describe(dtype)} not supported; use one of {known}")
    size = shape_size(shape, "tensor shape")
    if not isinstance(data, bytes):
        raise BadRequest(f"tensor data must be bytes (msgpack bin), got {type(data).__name__}")
    wire = _WIRE_DTYPES[dtype]
    needed = size * wire.itemsize
    if len(data) != needed:
        raise BadRequest(f"tensor data is {len(data)} bytes; shape {describe(shape)} of {dtype} needs {needed} bytes")
    try:  # every field is checked above: no second pass through workers.protocol.decode_tensor
        return np.frombuffer(data, dtype=wire).reshape(shape)
    except ValueError as exc:  # e.g. a zero-size tensor with a dimension numpy cannot represent
        raise BadRequest(f"bad tensor map: tensor shape {describe(shape)} invalid: {brief(exc)}") from None
