"""Coders: exact round trip on a linear model, tiling geometry pixel by pixel, bad input."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from coders import CODES, CodingError, ConcatCode, LinearCode, SumCode, make_code
from coders.base import coefficient_rows
from coders.concat import adaptive_pool, grid_for


def linear_model(in_features: int, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(classes, in_features, generator=g), torch.randn(classes, generator=g)


@pytest.mark.parametrize("k", [2, 3, 4, 8])
@pytest.mark.parametrize("name", sorted(n for n, c in CODES.items() if issubclass(c, LinearCode)))
def test_subtraction_decode_is_exact_for_a_linear_model(name: str, k: int) -> None:
    code = make_code(name, k)
    x = torch.rand(k, 5, 1, 28, 28, dtype=torch.float64)  # (k, B, C, H, W)
    w, b = linear_model(784)
    w, b = w.double(), b.double()
    f = lambda t: t.flatten(1) @ w.T + b
    outs = torch.stack([f(x[i]) for i in range(k)])  # (k, B, 10)
    if name == "sum":  # the sum code's ideal parity model is F with k times the bias
        parity_out = code.encode(x)[0].flatten(1) @ w.T + k * b
    else:  # for concat, the ideal parity model is defined by its target
        parity_out = code.target(outs)[0]
    assert torch.allclose(code.target(outs)[0], parity_out, atol=1e-9)
    for missing in range(k):
        available = {j: outs[j] for j in range(k) if j != missing} | {k: parity_out}
        decoded = code.decode(available)
        assert list(decoded) == [missing]
        assert torch.allclose(decoded[missing], outs[missing], atol=1e-9)
        assert torch.allclose(code.decode_batch(outs, parity_out, missing), outs[missing], atol=1e-9)


def test_sum_encode_is_the_sum() -> None:
    x = torch.rand(3, 2, 7)
    assert torch.equal(SumCode(3).encode(x)[0], x[0] + x[1] + x[2])


def test_decode_refuses_two_erasures_or_missing_parity() -> None:
    code = SumCode(3)
    out = torch.zeros(1, 10)
    with pytest.raises(CodingError, match=r"missing data slots \[1, 2\] with 1 of 1 parity"):
        code.decode({0: out, 3: out})
    with pytest.raises(CodingError, match="0 of 1 parity"):
        code.decode({0: out, 1: out})
    assert code.decode({0: out, 1: out, 2: out}) == {}


def test_concat_k2_side_by_side_pixel_by_pixel() -> None:
    x = torch.arange(2 * 1 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 1, 4, 4)
    p = ConcatCode(2).encode(x)[0, 0, 0]  # (4, 4)
    for i in range(2):
        img = x[i, 0, 0]
        for row in range(4):
            for col in range(2):  # each output pixel averages two horizontal neighbours
                want = (img[row, 2 * col] + img[row, 2 * col + 1]) / 2
                assert p[row, 2 * i + col] == want


def test_concat_k4_quadrants_pixel_by_pixel() -> None:
    x = torch.rand(4, 2, 3, 8, 8)  # (k, B, C, H, W): colour images too
    p = ConcatCode(4).encode(x)[0]  # (B, C, 8, 8)
    for i, (r0, c0) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        for row in range(4):
            for col in range(4):
                want = x[i, :, :, 2 * row:2 * row + 2, 2 * col:2 * col + 2].mean(dim=(-1, -2))
                assert torch.allclose(p[:, :, r0 + row, c0 + col], want)


def test_concat_k3_uses_three_quadrants_and_leaves_the_fourth_black() -> None:
    x = torch.ones(3, 1, 28, 28)  # (k, B, H, W): no channel axis
    p = ConcatCode(3).encode(x)[0, 0]
    assert p.shape == (28, 28)
    assert torch.equal(p[:14, :], torch.ones(14, 28)) and torch.equal(p[14:, :14], torch.ones(14, 14))
    assert torch.equal(p[14:, 14:], torch.zeros(14, 14))


def test_grid_and_odd_sizes() -> None:
    assert [grid_for(k) for k in (2, 3, 4, 5, 9)] == [(1, 2), (2, 2), (2, 2), (2, 3), (3, 3)]
    tiles = ConcatCode(3).tiles(29, 31)
    assert tiles[0] == (0, 14, 0, 16) and tiles[2] == (14, 29, 0, 16)  # tiles cover odd sizes exactly


def test_bad_settings_and_shapes_are_refused() -> None:
    with pytest.raises(CodingError, match="unknown code"):
        make_code("xor", 2)
    with pytest.raises(CodingError, match="k must be"):
        SumCode(0)
    with pytest.raises(CodingError, match="r must be"):
        SumCode(2, r=0)
    with pytest.raises(CodingError, match="image queries"):
        ConcatCode(2).check_input_shape((784,))
    with pytest.raises(CodingError, match="shape"):
        ConcatCode(2).encode(torch.rand(3, 1, 28, 28))


@pytest.mark.parametrize("name, k, shape", [("sum", 2, (1, 28, 28)), ("sum", 4, (10,)), ("concat", 2, (1, 28, 28)),
                                            ("concat", 3, (3, 32, 32)), ("concat", 4, (1, 29, 31))])
def test_numpy_and_torch_give_the_same_parity_and_decode(name: str, k: int, shape: tuple[int, ...]) -> None:
    code = make_code(name, k)
    x = torch.rand(k, 3, *shape)
    p_torch, p_numpy = code.encode(x), code.encode(x.numpy())
    assert isinstance(p_numpy, np.ndarray) and p_numpy.dtype == np.float32
    np.testing.assert_allclose(p_numpy, p_torch.numpy(), rtol=1e-6, atol=1e-6)
    outs = {j: np.random.default_rng(j).random((3, 10), dtype=np.float32) for j in range(k + 1) if j != 1}
    decoded = code.decode(outs)[1]
    assert isinstance(decoded, np.ndarray)
    np.testing.assert_allclose(decoded, code.decode({j: torch.from_numpy(v) for j, v in outs.items()})[1].numpy())


@pytest.mark.parametrize("h, w, th, tw", [(29, 31, 14, 15), (28, 28, 9, 10), (7, 5, 3, 2), (5, 6, 5, 6),
                                         (3, 4, 5, 7), (31, 29, 1, 1), (13, 17, 13, 8)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_adaptive_pool_matches_torch(h: int, w: int, th: int, tw: int, dtype: type) -> None:
    """The numpy pooling of the serving path gives torch's adaptive_avg_pool2d, overlapping windows too."""
    img = np.random.default_rng(h * w + th).random((2, 3, h, w)).astype(dtype)
    got = adaptive_pool(img, th, tw)
    want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(img), (th, tw)).numpy()
    assert got.dtype == dtype and got.shape == want.shape == (2, 3, th, tw)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-7)


def test_coefficient_rows_start_with_the_sum_and_any_r_columns_are_invertible() -> None:
    c = coefficient_rows(8, 3)  # (r, k)
    assert np.array_equal(c[0], np.ones(8)) and (c > 0).all()
    for cols in itertools.combinations(range(8), 3):
        assert abs(np.linalg.det(c[:, cols])) > 1e-6


@pytest.mark.parametrize("name", ["sum", "concat"])
@pytest.mark.parametrize("k, r", [(2, 2), (4, 2), (5, 3)])
def test_r_parities_decode_any_r_missing_exactly_for_a_linear_model(name: str, k: int, r: int) -> None:
    code = make_code(name, k, r)
    x = torch.rand(k, 4, 1, 28, 28, dtype=torch.float64)
    w, b = (t.double() for t in linear_model(784))
    outs = torch.stack([x[i].flatten(1) @ w.T + b for i in range(k)])  # (k, B, 10)
    parity_in = code.encode(x)  # (r, B, 1, 28, 28)
    assert parity_in.shape == (r, 4, 1, 28, 28)
    if name == "sum":  # parity model l is F with sum_i C[l, i] times the bias: exact
        parity_out = torch.stack([parity_in[lr].flatten(1) @ w.T + code.coeffs[lr].sum() * b for lr in range(r)])
        assert torch.allclose(parity_out, code.target(outs), atol=1e-9)
    else:
        parity_out = code.target(outs)  # (r, B, 10)
    for s in range(1, r + 1):
        for missing in itertools.combinations(range(k), s):
            for lost_parity in itertools.combinations(range(r), r - s):  # only s parities arrive
                available = {j: outs[j] for j in range(k) if j not in missing} | \
                            {k + lr: parity_out[lr] for lr in range(r) if lr not in lost_parity}
                decoded = code.decode(available)
                assert sorted(decoded) == list(missing)
                for m in missing:
                    assert torch.allclose(decoded[m], outs[m], atol=1e-7)
    for lr in range(r):  # the one-parity decode used in training
        assert torch.allclose(code.decode_batch(outs, parity_out[lr], k - 1, index=lr), outs[k - 1], atol=1e-9)


def test_r_parities_refuse_more_missing_than_parities_in() -> None:
    code = SumCode(4, r=2)
    out = np.zeros((1, 10), np.float32)
    with pytest.raises(CodingError, match="1 of 2 parity"):
        code.decode({0: out, 1: out, 4: out})
    assert set(code.decode({0: out, 1: out, 4: out, 5: out})) == {2, 3}


def test_one_missing_with_two_parities_in_uses_parity_zero() -> None:
    """The lowest-index parity decodes alone (it is learned best); parity 1 only when parity 0 is out."""
    code = ConcatCode(3, r=2)
    rng = np.random.default_rng(0)
    outs = {j: rng.random((2, 10), dtype=np.float32) for j in range(5)}  # parity outputs not consistent
    del outs[1]
    want0 = outs[3] - outs[0] - outs[2]
    np.testing.assert_allclose(code.decode(outs)[1], want0, rtol=1e-5)
    del outs[3]
    row = code.coeffs[1]
    want1 = (outs[4] - row[0] * outs[0] - row[2] * outs[2]) / row[1]
    np.testing.assert_allclose(code.decode(outs)[1], want1, rtol=1e-5)


def _blocky_images(k: int, batch: int, code: ConcatCode) -> torch.Tensor:
    """(k, B, 1, 28, 28) images constant on the code's pooling blocks, so tiling loses nothing."""
    bh, bw = code.rows, code.cols
    small = torch.rand(k, batch, 1, 28 // bh, 28 // bw, dtype=torch.float64)
    return small.repeat_interleave(bh, dim=3).repeat_interleave(bw, dim=4)


def _upsampled_tile(p: torch.Tensor, code: ConcatCode, i: int) -> torch.Tensor:
    """Tile i of tiled images p (B, 1, 28, 28), blown back up to (B, 1, 28, 28)."""
    t, b, left, right = code.tiles(28, 28)[i]
    return p[:, :, t:b, left:right].repeat_interleave(code.rows, dim=2).repeat_interleave(code.cols, dim=3)


@pytest.mark.parametrize("k, r", [(2, 1), (4, 1), (4, 2)])
def test_concat_through_a_real_linear_parity_model_decodes_exactly(k: int, r: int) -> None:
    """The concat code's encode runs through a model: for a linear base F and images the tiling does not
    blur, the affine map P -> sum_i C[l, i] F(tile_i(P)) is an exact parity model. Built as an nn.Linear
    over the tiled image, fed code.encode's output; decode must give back every F(X_m)."""
    code = ConcatCode(k, r)
    w, b = (t.double() for t in linear_model(784))
    f = lambda t: t.flatten(1) @ w.T + b  # (B, 1, 28, 28) -> (B, 10)
    parity_models = []
    for row in code.coeffs:  # row l: (k,) weights
        exact = lambda p, row=row: sum(c * f(_upsampled_tile(p, code, i)) for i, c in enumerate(row))
        model = torch.nn.Linear(784, 10, dtype=torch.float64)
        with torch.no_grad():  # read the affine map off the basis images
            model.bias.copy_(exact(torch.zeros(1, 1, 28, 28, dtype=torch.float64))[0])
            model.weight.copy_((exact(torch.eye(784, dtype=torch.float64).view(784, 1, 28, 28)) - model.bias).T)
        parity_models.append(model)
    x = _blocky_images(k, 6, code)
    outs = torch.stack([f(x[i]) for i in range(k)])  # (k, B, 10)
    with torch.no_grad():
        parity_out = torch.stack([m(code.encode(x)[lr].flatten(1)) for lr, m in enumerate(parity_models)])
    assert torch.allclose(parity_out, code.target(outs), atol=1e-8)
    for missing in itertools.combinations(range(k), r):
        available = {j: outs[j] for j in range(k) if j not in missing} | {k + lr: parity_out[lr] for lr in range(r)}
        decoded = code.decode(available)
        assert sorted(decoded) == list(missing)
        for m in missing:
            assert torch.allclose(decoded[m], outs[m], atol=1e-7)
    # and images the tiling does blur are not decoded exactly: the test can tell the difference
    sharp = torch.rand(k, 6, 1, 28, 28, dtype=torch.float64)
    sharp_outs = torch.stack([f(sharp[i]) for i in range(k)])
    with torch.no_grad():
        sharp_parity = parity_models[0](code.encode(sharp)[0].flatten(1))
    assert not torch.allclose(sharp_parity, code.target(sharp_outs)[0], atol=1e-3)
