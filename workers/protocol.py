"""Wire protocol between the frontend and workers: length-prefixed msgpack frames.

Each frame is a 4-byte big-endian payload length followed by one msgpack map. Tensors travel
as {"dtype", "shape", "data": raw little-endian bytes}; no pickle anywhere. This module imports
no torch, so the frontend starts fast. ``FrameDecoder`` is sans-I/O: feed it bytes split at any
point and it yields whole messages, refusing frames over ``max_frame`` before buffering them.

Messages (every request carries an integer ``id`` echoed by its reply):
  {"type": "infer", "id", "inputs": tensor (B, *S)}  -> {"type": "result", "id", "outputs": tensor (B, C)}
  {"type": "ping", "id"}                              -> {"type": "pong", "id", "info": {...}}
  {"type": "fault", "id", "spec": str}                -> {"type": "ok", "id", "fault": str}
  any request that fails                              -> {"type": "error", "id", "message": str}
"""
from __future__ import annotations

import math
import struct
from typing import Any

import msgpack
import numpy as np

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 64 * 1024 * 1024  # 64 MiB: far above a batch of images, far below memory
ALLOWED_DTYPES = frozenset({"float32", "float64", "float16", "int64", "int32", "uint8"})
REQUEST_TYPES = frozenset({"infer", "ping", "fault"})
REPLY_TYPES = frozenset({"result", "pong", "ok", "error"})


class ProtocolError(ValueError):
    """A peer sent bytes that are not a valid frame or message; the connection must be closed."""


# dtype -> its wire name, for arrays in native byte order (the common case: one dict lookup, not
# numpy's dtype.name property, which costs ~10 us a call); and each wire name's little-endian dtype
_NATIVE_NAMES = {np.dtype(name): name for name in ALLOWED_DTYPES}
_LITTLE = {name: np.dtype(name).newbyteorder("<") for name in ALLOWED_DTYPES}


def encode_tensor(array: np.ndarray) -> dict[str, Any]:
    a = np.asarray(array, order="C")  # not ascontiguousarray: it makes 0-d arrays shape (1,)
    name = _NATIVE_NAMES.get(a.dtype) or a.dtype.name  # a byte-swapped array: by its name
    little = _LITTLE.get(name)
    if little is None:
        raise ProtocolError(f"dtype {name} not allowed on the wire")
    data = a.tobytes() if a.dtype == little else a.astype(little).tobytes()
    return {"dtype": name, "shape": list(a.shape), "data": data}


def decode_tensor(obj: Any) -> np.ndarray:
    """Wire map -> numpy array (a read-only view on the frame's bytes). Validates everything."""
    if not isinstance(obj, dict):
        raise ProtocolError("tensor must be a map")
    dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    if dtype not in ALLOWED_DTYPES:
        raise ProtocolError(f"tensor dtype {dtype!r} not allowed")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"tensor shape {shape!r} invalid")
    if not isinstance(data, bytes):
        raise ProtocolError("tensor data must be bytes")
    dt = _LITTLE[dtype]
    needed = math.prod(shape) * dt.itemsize  # Python ints: np.prod(int64) silently wraps on huge shapes
    if len(data) != needed:
        raise ProtocolError(f"tensor data is {len(data)} bytes, shape {shape} of {dtype} needs {needed}")
    try:
        return np.frombuffer(data, dtype=dt).reshape(shape)
    except ValueError as exc:  # e.g. a zero-size tensor with a dimension numpy cannot represent
        raise ProtocolError(f"tensor shape {shape} invalid: {exc}") from exc


def pack(message: dict[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Message map -> one frame (header + payload)."""
    payload = msgpack.packb(message, use_bin_type=True)
    if len(payload) > max_frame:
        raise ProtocolError(f"frame of {len(payload)} bytes exceeds the limit of {max_frame}")
    return HEADER.pack(len(payload)) + payload


def _unpack_payload(payload: bytes | memoryview) -> dict[str, Any]:
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=len(payload),
                              max_str_len=len(payload), max_array_len=len(payload), max_map_len=len(payload))
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"undecodable msgpack payload: {exc}") from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("message must be a map with a string 'type'")
    if not isinstance(msg.get("id"), int):
        raise ProtocolError("message must carry an integer 'id'")
    return msg


class FrameDecoder:
    """Incremental frame parser. ``feed(bytes)`` returns the complete messages so far."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buf = self._buf
        buf += data
        out: list[dict[str, Any]] = []
        start, size = 0, len(buf)
        with memoryview(buf) as view:  # frames are decoded in place, and the buffer trimmed once
            while size - start >= HEADER.size:
                (length,) = HEADER.unpack_from(buf, start)
                if length > self.max_frame:
                    raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
                end = start + HEADER.size + length
                if size < end:
                    break
                out.append(_unpack_payload(view[start + HEADER.size:end]))  # copies what it keeps
                start = end
        if start:
            del buf[:start]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
