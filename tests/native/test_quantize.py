"""Float conversion (bit-exact vs numpy / ml_dtypes) and int8 quantization bounds."""

from __future__ import annotations

import contextlib
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellnet.errors import DTypeError, InvalidArgumentError, ShapeError
from cellnet.native import ffi, forced_portable, lib
from cellnet.native import quantize as qz

BF16 = np.dtype(ml_dtypes.bfloat16)
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
FLOATS = [F16, BF16, F32, F64]


@pytest.fixture(params=["simd", "portable"])
def impl(request):
    ctx = forced_portable() if request.param == "portable" else contextlib.nullcontext()
    with ctx:
        yield request.param


def _assert_same_floats(got: np.ndarray, ref: np.ndarray) -> None:
    """Bit-identical, except that any NaN matches any NaN (payloads may differ)."""
    assert got.dtype == ref.dtype and got.shape == ref.shape
    with np.errstate(invalid="ignore"):  # ml_dtypes flags NaN casts
        g_nan = np.isnan(got.astype(np.float64))
        r_nan = np.isnan(ref.astype(np.float64))
    np.testing.assert_array_equal(g_nan, r_nan)
    ui = {2: np.uint16, 4: np.uint32, 8: np.uint64}[got.itemsize]
    np.testing.assert_array_equal(got[~g_nan].view(ui), ref[~r_nan].view(ui))


def _ref(x: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(dtype)


def _all16(dtype) -> np.ndarray:
    return np.arange(2**16, dtype=np.uint16).view(dtype)


def _specials(dtype) -> np.ndarray:
    vals = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 65504.0, 65519.99, 65520.0, 65536.0,
            2.0**-24, 2.0**-25, 1.5 * 2.0**-25, 2.0**-14, 2.0**-14 * (1 - 2.0**-11),
            3.3895313892515355e38, 3.4e38, 1e-45, 1.17e-38, 9.2e-41, 1e300, -1e-300]
    return _ref(np.array(vals, np.float64), dtype)


@pytest.mark.parametrize("src", [F16, BF16], ids=str)
@pytest.mark.parametrize("dst", FLOATS, ids=str)
def test_every_16bit_pattern_converts_exactly(impl, src, dst):
    x = _all16(src)
    _assert_same_floats(qz.convert(x, dst), _ref(x, dst))


@pytest.mark.parametrize("src", [F32, F64], ids=str)
@pytest.mark.parametrize("dst", FLOATS, ids=str)
def test_random_bit_patterns_and_specials_round_like_numpy(impl, src, dst):
    rng = np.random.default_rng(42)
    ui = np.uint32 if src == F32 else np.uint64
    bits = rng.integers(0, np.iinfo(ui).max, 200_003, dtype=ui, endpoint=True).view(src)
    # values near the half / bfloat16 ranges, where rounding and subnormals happen
    scales = rng.choice([2.0**-26, 2.0**-20, 2.0**-14, 1.0, 6e4, 1e-39, 3e38], 100_000)
    near = _ref(rng.standard_normal(100_000) * scales, src)
    x = np.concatenate([bits, near, _specials(src)])
    got, ref = qz.convert(x, dst), _ref(x, dst)
    if src == F64 and dst == BF16:
        got = _check_double_rounding_cases(x, got, ref)
    _assert_same_floats(got, ref)


def _check_double_rounding_cases(x: np.ndarray, got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """ml_dtypes rounds float64 -> bfloat16 via float32 (twice); we round once.

    Where the two differ, prove ours is the correctly rounded one with exact
    rational arithmetic, then return ``got`` with those entries set to ``ref``.
    """
    with np.errstate(invalid="ignore"):
        diff = np.nonzero((got.view(np.uint16) != ref.view(np.uint16)) & ~np.isnan(x))[0]
    assert diff.size <= x.size // 10_000
    for i in diff:
        exact = Fraction(float(x[i]))
        ours, theirs = (Fraction(float(v)) for v in (got[i], ref[i]))
        d_ours, d_theirs = abs(exact - ours), abs(exact - theirs)
        even = not got.view(np.uint16)[i] & 1
        assert d_ours < d_theirs or (d_ours == d_theirs and even)
    fixed = got.copy()
    fixed[diff] = ref[diff]
    return fixed


def test_named_converters_and_misaligned_tails(impl):
    raw = np.zeros(4 * 70 + 3, np.uint8)
    x = raw[3:3 + 4 * 65].view(np.float32)
    x[:] = np.linspace(-70000, 70000, 65)
    for n in (0, 1, 15, 17, 63, 65):
        _assert_same_floats(qz.to_float16(x[:n]), _ref(x[:n], F16))
        _assert_same_floats(qz.to_bfloat16(x[:n]), _ref(x[:n], BF16))
        _assert_same_floats(qz.to_float32(x[:n].astype(F64)), x[:n])
    y = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]  # non-contiguous
    _assert_same_floats(qz.to_float16(y), y.astype(F16))


def test_convert_rejects_non_float():
    with pytest.raises(DTypeError):
        qz.convert(np.ones(3, np.int32), np.float16)
    with pytest.raises(DTypeError):
        qz.convert(np.ones(3, np.float32), np.int8)
    p = ffi.new("float[1]")
    assert lib.cn_convert(p, lib.CN_F32, p, lib.CN_U16, 1) == lib.CN_E_DTYPE
    assert lib.cn_convert(ffi.NULL, lib.CN_F32, p, lib.CN_F16, 1) == lib.CN_E_INVAL
    assert lib.cn_convert(ffi.NULL, lib.CN_F32, ffi.NULL, lib.CN_F16, 0) == lib.CN_OK


# ---------------------------------------------------------------------- int8
def _check_q8(x: np.ndarray, block: int, q: np.ndarray, s: np.ndarray) -> None:
    xf = x.astype(np.float64).reshape(-1)
    n = xf.size
    assert q.dtype == np.int8 and q.shape == (n,)
    assert s.dtype == np.float32 and s.shape == (-(-n // block),)
    assert q.min(initial=0) >= -127
    per = np.repeat(s.astype(np.float64), block)[:n]
    deq = qz.dequantize_int8(q, s, x.shape, block, np.float64).reshape(-1)
    # |x - deq| <= scale/2, plus float32 rounding of x, of the scale and of x*inv
    bound = per / 2 + 4 * 2.0**-24 * np.abs(xf) + 1e-45
    assert np.all(np.abs(xf - deq) <= bound)
    for b in range(s.size):
        blk = xf[b * block:(b + 1) * block]
        amax = np.abs(blk).max()
        assert s[b] == np.float32(np.float32(amax) / np.float32(127))
        if amax == 0:
            assert not np.any(q[b * block:(b + 1) * block])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.one_of(st.sampled_from([0, 1, 15, 17, 63, 65]),
                                                   st.integers(0, 3000)),
       block=st.one_of(st.sampled_from([1, 16, 64, 256, 1024, 1500]), st.integers(1, 2500)),
       dt=st.sampled_from(FLOATS), scale=st.sampled_from([1e-3, 1.0, 1e4]))
def test_q8_error_bound(seed, n, block, dt, scale):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * scale).astype(dt)
    if n > 4:
        x[: min(block, n)] = 0  # an all-zero block
    q, s = qz.quantize_int8(x, block)
    _check_q8(x, block, q, s)
    with forced_portable():
        q2, s2 = qz.quantize_int8(x, block)
    np.testing.assert_array_equal(s, s2)
    assert np.abs(q.astype(int) - q2).max(initial=0) <= 1


def test_q8_extremes_and_dtypes(impl):
    x = np.array([[1.0, -2.0, 0.5], [127.0, 0.0, -127.0]], np.float32)
    q, s = qz.quantize_int8(x, block=3)
    np.testing.assert_array_equal(q, [64, -127, 32, 127, 0, -127])
    np.testing.assert_array_equal(s, np.float32([2 / 127, 1.0]))
    for dt in FLOATS:
        out = qz.dequantize_int8(q, s, (2, 3), 3, dt)
        assert out.dtype == dt and out.shape == (2, 3)
        ref = (q.astype(np.float32) * np.repeat(s, 3)).astype(dt).reshape(2, 3)
        if dt == F64:
            ref = (q.astype(np.float64) * np.repeat(s, 3).astype(np.float64)).reshape(2, 3)
        _assert_same_floats(out, ref)
    big = np.random.default_rng(1).standard_normal(300_001).astype(np.float32)
    q, s = qz.quantize_int8(big)
    _check_q8(big, qz.DEFAULT_BLOCK, q, s)


def test_q8_rejects_non_finite_and_bad_parameters():
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones(100, np.float32)
        x[77] = bad
        with pytest.raises(InvalidArgumentError):
            qz.quantize_int8(x, 16)
    with pytest.raises(InvalidArgumentError):
        qz.quantize_int8(np.array([1e300, 1.0]), 2)  # beyond float32 range
    for blk in (0, -1, 2**32, 1.5, True):
        with pytest.raises(InvalidArgumentError):
            qz.quantize_int8(np.ones(4, np.float32), blk)
    with pytest.raises(DTypeError):
        qz.quantize_int8(np.ones(4, np.int16))
    q, s = qz.quantize_int8(np.ones(10, np.float32), 4)
    with pytest.raises(ShapeError):
        qz.dequantize_int8(q, s, (11,), 4)
    with pytest.raises(ShapeError):
        qz.dequantize_int8(q, s[:2], (10,), 4)
    with pytest.raises(DTypeError):
        qz.dequantize_int8(q.astype(np.int16), s, (10,), 4)
    with pytest.raises(DTypeError):
        qz.dequantize_int8(q, s.astype(np.float64), (10,), 4)
    with pytest.raises(DTypeError):
        qz.dequantize_int8(q, s, (10,), 4, np.int32)
    assert lib.cn_q8_nblocks(10, 0) == 0 and lib.cn_q8_nblocks(10, 4) == 3
    assert lib.cn_quantize_q8(ffi.NULL, lib.CN_F32, 0, 4, ffi.NULL, ffi.NULL) == lib.CN_OK
    assert lib.cn_quantize_q8(ffi.NULL, lib.CN_F32, 4, 0, ffi.NULL, ffi.NULL) == lib.CN_E_INVAL
