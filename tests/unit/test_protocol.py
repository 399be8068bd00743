"""Wire protocol: tensor round trips, frame reassembly at any split, and rejection of bad input."""
from __future__ import annotations

import random

import msgpack
import numpy as np
import pytest

from workers.protocol import HEADER, FrameDecoder, ProtocolError, decode_tensor, encode_tensor, pack


def _messages() -> list[dict]:
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 4, 4), dtype=np.float32)
    return [{"type": "infer", "id": 1, "inputs": encode_tensor(x)},
            {"type": "ping", "id": 2},
            {"type": "fault", "id": 3, "spec": "delay:ms=5"},
            {"type": "result", "id": 4, "outputs": encode_tensor(np.zeros((0, 10), np.float32))}]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "int32", "uint8"])
def test_tensor_round_trip(dtype: str) -> None:
    a = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    b = decode_tensor(msgpack.unpackb(msgpack.packb(encode_tensor(a), use_bin_type=True)))
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_big_endian_and_non_contiguous_inputs_round_trip() -> None:
    a = np.arange(12, dtype=">f4").reshape(3, 4)[:, ::2]
    np.testing.assert_array_equal(decode_tensor(encode_tensor(a)), a)


def test_scalar_and_empty_tensors() -> None:
    assert decode_tensor(encode_tensor(np.float32(2.5))).shape == ()
    assert decode_tensor(encode_tensor(np.zeros((0, 3), np.float32))).shape == (0, 3)


def _assert_same(got: list[dict], want: list[dict]) -> None:
    assert [m["id"] for m in got] == [m["id"] for m in want]
    for g, w in zip(got, want):
        assert msgpack.packb(g, use_bin_type=True) == msgpack.packb(w, use_bin_type=True)


def test_every_split_point_yields_same_messages() -> None:
    msgs = _messages()
    stream = b"".join(pack(m) for m in msgs)
    for cut in range(len(stream) + 1):
        dec = FrameDecoder()
        got = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        _assert_same(got, msgs)
        assert dec.buffered == 0


def test_random_chunks_and_single_bytes() -> None:
    msgs = _messages() * 3
    stream = b"".join(pack(m) for m in msgs)
    rng = random.Random(1)
    for _ in range(50):
        dec, got, i = FrameDecoder(), [], 0
        while i < len(stream):
            n = rng.randint(1, 40)
            got += dec.feed(stream[i:i + n])
            i += n
        _assert_same(got, msgs)
    dec = FrameDecoder()
    _assert_same([m for b in stream for m in dec.feed(bytes([b]))], msgs)


def test_oversized_header_rejected_before_buffering() -> None:
    dec = FrameDecoder(max_frame=100)
    with pytest.raises(ProtocolError, match="exceeds"):
        dec.feed(HEADER.pack(101))  # header alone, no payload: refused without waiting for it
    assert FrameDecoder(max_frame=100).feed(HEADER.pack(100)) == []  # at the limit: waits


def test_pack_refuses_oversized_message() -> None:
    with pytest.raises(ProtocolError):
        pack({"type": "ping", "id": 1, "pad": b"x" * 200}, max_frame=100)


def _frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


@pytest.mark.parametrize("payload", [
    b"\xc1",                                             # reserved msgpack byte
    b"\x92\x01",                                         # truncated array
    msgpack.packb({"type": "ping", "id": 1}) + b"\x00",  # trailing data inside the frame
    msgpack.packb([1, 2, 3]),                            # not a map
    msgpack.packb("ping"),
    msgpack.packb({"type": "ping"}),                     # missing id
    msgpack.packb({"type": "ping", "id": "7"}),          # id not an int
    msgpack.packb({"id": 1}),                            # missing type
    msgpack.packb({1: 2}),                               # non-string key
])
def test_bad_payloads_raise_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(_frame(payload))


def test_random_garbage_never_raises_anything_but_protocol_error() -> None:
    rng = random.Random(2)
    for _ in range(2000):
        payload = bytes(rng.randrange(256) for _ in range(rng.randint(1, 24)))
        try:
            FrameDecoder().feed(_frame(payload))
        except ProtocolError:
            pass


@pytest.mark.parametrize("tensor,match", [
    ({"dtype": "object", "shape": [1], "data": b"x"}, "dtype"),
    ({"dtype": "complex64", "shape": [1], "data": b"\0" * 8}, "dtype"),
    ({"dtype": "float32", "shape": [2], "data": b"\0" * 4}, "bytes"),
    ({"dtype": "float32", "shape": [2], "data": b"\0" * 12}, "bytes"),
    ({"dtype": "float32", "shape": [-1], "data": b""}, "shape"),
    ({"dtype": "float32", "shape": "2", "data": b"\0" * 8}, "shape"),
    ({"dtype": "float32", "shape": [2], "data": "abcdefgh"}, "bytes"),
    ({"dtype": "float32", "shape": [2 ** 32, 2 ** 32], "data": b""}, "bytes"),  # would wrap int64
    ({"dtype": "float32", "shape": [0, 2 ** 63], "data": b""}, "shape"),
    ([1, 2], "map"),
])
def test_bad_tensors_raise_protocol_error(tensor: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_tensor(tensor)


def test_encode_refuses_disallowed_dtype() -> None:
    with pytest.raises(ProtocolError):
        encode_tensor(np.zeros(2, np.complex64))
