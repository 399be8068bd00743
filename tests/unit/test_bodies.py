"""frontend.bodies: parsing that never recurses into a 500, bounded echoes, exact shape sizes; and the
Service's guard against a --default-output that does not fit the answers beside it."""
from __future__ import annotations

import numpy as np
import pytest

from frontend.bodies import MAX_DIMS, MAX_TEXT, brief, describe, loads_json, loads_msgpack, shape_size
from frontend.config import FrontendConfig
from frontend.errors import BadRequest, ConfigError, DeadlineExceeded, NotReady
from frontend.query import Answer
from frontend.service import Service


@pytest.mark.parametrize("raw", [b"[" * 100_000, b"[" * 5000 + b"]" * 5000, b'{"a":' * 100_000 + b"1",
                                 b"{bad", b"", b"\xff", b"[1, 2] 3"])
def test_malformed_or_deep_json_is_a_bad_request(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="malformed JSON body"):
        loads_json(raw)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_literals_are_refused_by_name(literal: str) -> None:
    with pytest.raises(BadRequest, match="NaN or Infinity"):
        loads_json(f'{{"inputs": [[1.0, {literal}]]}}'.encode())


def test_json_keeps_what_the_json_module_accepted() -> None:
    assert loads_json(b'\xef\xbb\xbf{"a": [1, 2.5, true, null]}') == {"a": [1, 2.5, True, None]}
    assert loads_json(b'{"a": 1, "a": 2}') == {"a": 2}  # the last duplicate wins, as with json.loads


@pytest.mark.parametrize("raw", [b"\x91" * 100_000 + b"\xc0", b"\x81\xa1a" * 100_000 + b"\xc0", b"\xc1",
                                 b"\xdc\xff\xff", b"\x92\x01"])
def test_malformed_or_deep_msgpack_is_a_bad_request(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="malformed msgpack body"):
        loads_msgpack(raw)


def test_describe_and_brief_are_bounded() -> None:
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    assert len(describe(deep)) < 100 and len(describe("x" * 10**6)) < 100
    assert len(brief(ValueError("y" * 10**6))) <= MAX_TEXT + 3


@pytest.mark.parametrize("shape, size", [([2**32, 2**32], 2**64), ([2**60 + 49, 16], 2**64 + 784), ([], 1),
                                         ([0, 784], 0)])
def test_shape_size_is_exact(shape: list[int], size: int) -> None:
    assert shape_size(shape, "shape") == size  # np.prod would wrap both of the first two


@pytest.mark.parametrize("shape", [[-1, 784], [True, 1], [1.0], "1", None, [1] * (MAX_DIMS + 1), [[1]]])
def test_shape_size_refuses_what_is_not_a_shape(shape: object) -> None:
    with pytest.raises(BadRequest, match="shape"):
        shape_size(shape, "shape")


def test_a_default_output_that_does_not_fit_the_real_answers_is_a_504_not_a_broken_stack() -> None:
    service = Service(FrontendConfig(data=(("127.0.0.1", 1),), mode="none", default_output=(0.0,) * 3))
    real, default = Answer(np.zeros(10, np.float32)), Answer(np.zeros(3, np.float32), default=True)
    service._check_defaults_fit([real, real], None)  # all one size: fine
    service._answer_size = 10
    with pytest.raises(DeadlineExceeded, match="1 of 2 queries.*--default-output has 3 values"):
        service._check_defaults_fit([real, default], None)
    with pytest.raises(NotReady, match="different output sizes"):
        service._check_defaults_fit([real, Answer(np.zeros(4, np.float32))], None)


@pytest.mark.parametrize("default", [(), (float("nan"),), (0.0, float("inf"))])
def test_default_output_must_be_finite_numbers(default: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="default_output"):
        FrontendConfig(data=(("127.0.0.1", 1),), mode="none", default_output=default)
