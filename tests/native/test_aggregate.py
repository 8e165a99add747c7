"""Aggregation kernels against numpy references, on the SIMD and portable paths."""

from __future__ import annotations

import contextlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellnet.errors import DTypeError, InvalidArgumentError, ShapeError
from cellnet.native import aggregate as agg
from cellnet.native import ffi, forced_portable, lib

BF16 = np.dtype(ml_dtypes.bfloat16)
X_DTYPES = [np.dtype(np.float16), BF16, np.dtype(np.float32), np.dtype(np.float64)]
ACC_DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
TAILS = [0, 1, 15, 17, 63, 65, 2049]
EPS = {np.dtype(np.float32): 2.0**-23, np.dtype(np.float64): 2.0**-52}


@pytest.fixture(params=["simd", "portable"])
def impl(request):
    """Run the test once on the dispatched SIMD kernels and once on portable C."""
    ctx = forced_portable() if request.param == "portable" else contextlib.nullcontext()
    with ctx:
        yield request.param


def _data(rng, n, dtype, scale=1.0):
    return (rng.standard_normal(n) * scale).astype(dtype)


def _acc_tol(acc_dtype, x_dtype, *terms):
    """Bound on |fused result - exact| for a sum of the given float64 terms."""
    mag = sum(np.abs(t) for t in terms)
    eps = EPS[acc_dtype]
    if acc_dtype == np.float32 and x_dtype == np.float64:
        eps *= 2  # the f64 input is first rounded to f32
    return 4 * eps * mag + 1e-300


def _misaligned(a: np.ndarray, offset: int = 1) -> np.ndarray:
    """A copy of ``a`` whose data starts ``offset`` bytes past an aligned address."""
    raw = np.zeros(a.nbytes + 64 + offset, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    view = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    view[...] = a
    assert view.ctypes.data % 64 == offset
    return view


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.one_of(st.sampled_from(TAILS), st.integers(0, 300)),
       ad=st.sampled_from(ACC_DTYPES), xd=st.sampled_from(X_DTYPES),
       w=st.floats(-4, 4, allow_nan=False))
def test_accumulate_matches_float64_reference(seed, n, ad, xd, w):
    rng = np.random.default_rng(seed)
    acc = _data(rng, n, ad)
    x = _data(rng, n, xd)
    exact = acc.astype(np.float64) + w * x.astype(np.float64)
    tol = _acc_tol(ad, xd, acc.astype(np.float64), w * x.astype(np.float64))
    for ctx in (contextlib.nullcontext(), forced_portable()):
        a = acc.copy()
        with ctx:
            assert agg.accumulate(a, x, w) is a
        assert np.all(np.abs(a.astype(np.float64) - exact) <= tol)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.one_of(st.sampled_from(TAILS), st.integers(0, 200)),
       k=st.integers(1, 20), ad=st.sampled_from(ACC_DTYPES), xd=st.sampled_from(X_DTYPES))
def test_many_equals_sequence_of_single_accumulates(seed, n, k, ad, xd):
    # The fused kernel performs the same FMAs in the same order: bit-identical.
    rng = np.random.default_rng(seed)
    acc = _data(rng, n, ad)
    xs = [_data(rng, n, xd) for _ in range(k)]
    ws = list(rng.uniform(-2, 2, k))
    fused, seq = acc.copy(), acc.copy()
    agg.accumulate_many(fused, xs, ws)
    for x, w in zip(xs, ws, strict=True):
        agg.accumulate(seq, x, w)
    np.testing.assert_array_equal(fused, seq)
    terms = [w * x.astype(np.float64) for x, w in zip(xs, ws, strict=True)]
    exact = acc.astype(np.float64) + sum(terms)
    tol = _acc_tol(ad, xd, acc.astype(np.float64), *terms) * 2
    assert np.all(np.abs(fused.astype(np.float64) - exact) <= tol)


@pytest.mark.parametrize("xd", X_DTYPES, ids=str)
def test_long_misaligned_inputs_simd_equals_portable(xd):
    rng = np.random.default_rng(7)
    n = 1_000_003
    xs = [_misaligned(_data(rng, n, xd), off) for off in (1, 3, 6)]
    ws = [0.5, -1.25, 2.0]
    simd = _misaligned(np.ones(n, np.float32), 4)
    agg.accumulate_many(simd, xs, ws)
    port = np.ones(n, np.float32)
    with forced_portable():
        agg.accumulate_many(port, xs, ws)
    exact = 1.0 + sum(w * x.astype(np.float64) for x, w in zip(xs, ws, strict=True))
    tol = _acc_tol(np.dtype(np.float32), xd, np.ones(n),
                   *[w * x.astype(np.float64) for x, w in zip(xs, ws, strict=True)]) * 2
    assert np.all(np.abs(simd - exact) <= tol)
    assert np.all(np.abs(port - exact) <= tol)


def test_accumulate_many_groups_mixed_input_dtypes(impl):
    rng = np.random.default_rng(1)
    xs = [_data(rng, 100, d) for d in X_DTYPES]
    acc = np.zeros(100, np.float64)
    agg.accumulate_many(acc, xs, [1.0, 2.0, 3.0, 4.0])
    ref = sum(w * x.astype(np.float64) for x, w in zip(xs, [1, 2, 3, 4], strict=True))
    np.testing.assert_allclose(acc, ref, rtol=1e-12, atol=1e-12)


def test_nan_and_inf_propagate_like_numpy(impl):
    acc = np.zeros(40, np.float32)
    x = np.ones(40, np.float32)
    x[[3, 20, 39]] = [np.nan, np.inf, -np.inf]
    agg.accumulate(acc, x, 2.0)
    np.testing.assert_array_equal(acc, np.float32(2.0) * x)


def test_accumulate_rejects_bad_input_and_changes_nothing():
    acc = np.arange(8, dtype=np.float32)
    before = acc.copy()
    with pytest.raises(ShapeError):
        agg.accumulate(acc, np.ones(9, np.float32), 1.0)
    with pytest.raises(DTypeError):
        agg.accumulate(acc, np.ones(8, np.int32), 1.0)
    with pytest.raises(DTypeError):
        agg.accumulate(np.zeros(8, np.float16), np.ones(8, np.float32), 1.0)
    with pytest.raises(InvalidArgumentError):
        agg.accumulate(acc, np.ones(8, np.float32), float("nan"))
    with pytest.raises(InvalidArgumentError):
        agg.accumulate(acc[::2], np.ones(4, np.float32), 1.0)
    with pytest.raises(ShapeError):
        agg.accumulate_many(acc, [np.ones(8, np.float32)], [1.0, 2.0])
    with pytest.raises(ShapeError):
        agg.accumulate_many(acc, [np.ones(8, np.float32), np.ones(7, np.float32)], [1.0, 1.0])
    np.testing.assert_array_equal(acc, before)


def test_c_status_codes():
    buf = np.zeros(4, np.float32)
    p = ffi.cast("void *", buf.ctypes.data)
    assert lib.cn_agg_accumulate(p, lib.CN_F16, p, lib.CN_F32, 4, 1.0) == lib.CN_E_DTYPE
    assert lib.cn_agg_accumulate(p, lib.CN_F32, p, lib.CN_I32, 4, 1.0) == lib.CN_E_DTYPE
    assert lib.cn_agg_accumulate(ffi.NULL, lib.CN_F32, p, lib.CN_F32, 4, 1.0) == lib.CN_E_INVAL
    assert lib.cn_agg_accumulate(ffi.NULL, lib.CN_F32, ffi.NULL, lib.CN_F32, 0, 1.0) == lib.CN_OK
    assert lib.cn_agg_finalize(p, lib.CN_F32, 4, 0.0, p, lib.CN_F32) == lib.CN_E_INVAL
    assert lib.cn_agg_median(ffi.NULL, lib.CN_F32, 0, 4, p, lib.CN_F32) == lib.CN_E_INVAL
    xs = ffi.new("void *[]", [p] * 3)
    assert lib.cn_agg_trimmed_mean(xs, lib.CN_F32, 3, 2, 4, p, lib.CN_F32) == lib.CN_E_INVAL
    out = ffi.new("double *")
    assert lib.cn_l2_norm(p, lib.CN_U8, 4, out) == lib.CN_E_DTYPE


# ------------------------------------------------------------------ finalize
@pytest.mark.parametrize("ad", ACC_DTYPES, ids=str)
@pytest.mark.parametrize("od", X_DTYPES, ids=str)
def test_finalize_is_bit_exact_with_numpy(impl, ad, od):
    rng = np.random.default_rng(3)
    acc = _data(rng, 1001, ad, scale=1e3)
    acc[:4] = [0.0, -0.0, 1e-30, 7e5]
    tw = 3.7
    got = agg.finalize(acc, tw, dtype=od)
    with np.errstate(over="ignore"):  # 7e5 / 3.7 overflows float16: inf on both sides
        ref = (acc / ad.type(tw)).astype(od)
    assert got.dtype == od
    np.testing.assert_array_equal(got.view(np.uint8), ref.view(np.uint8))


@pytest.mark.parametrize("mask_name", ["avx512f-only", "avx2-only", "avx2+fma+f16c"])
@pytest.mark.parametrize("ad", ACC_DTYPES, ids=str)
def test_finalize_same_dtype_under_partial_cpu_masks(mask_name, ad):
    """The same-dtype division dispatches on the shared float level like every other kernel."""
    mask = {"avx512f-only": lib.CN_CPU_AVX512F, "avx2-only": lib.CN_CPU_AVX2,
            "avx2+fma+f16c": lib.CN_CPU_AVX2 | lib.CN_CPU_FMA | lib.CN_CPU_F16C}[mask_name]
    rng = np.random.default_rng(5)
    acc = _data(rng, 1037, ad, scale=1e3)
    ref = acc / ad.type(3.7)
    prev = lib.cn_cpu_set_mask(mask)
    try:
        got = agg.finalize(acc, 3.7)
        agg.finalize(acc, 3.7, out=acc)
    finally:
        lib.cn_cpu_set_mask(prev)
    np.testing.assert_array_equal(got.view(np.uint8), ref.view(np.uint8))
    np.testing.assert_array_equal(acc.view(np.uint8), ref.view(np.uint8))


def test_finalize_in_place_and_narrowing_in_place(impl):
    acc = np.arange(3000, dtype=np.float32)
    ref = acc / np.float32(4.0)
    assert agg.finalize(acc, 4.0, out=acc) is acc
    np.testing.assert_array_equal(acc, ref)
    acc64 = np.arange(3000, dtype=np.float64)
    half = acc64.view(np.float16)[:3000]  # same start, narrower elements
    agg.finalize(acc64, 2.0, out=half)
    np.testing.assert_array_equal(half, (np.arange(3000) / 2.0).astype(np.float16))


def test_finalize_rejects_bad_arguments():
    acc = np.ones(10, np.float32)
    for tw in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(InvalidArgumentError):
            agg.finalize(acc, tw)
    with pytest.raises(ShapeError):
        agg.finalize(acc, 1.0, out=np.empty(11, np.float32))
    with pytest.raises(DTypeError):
        agg.finalize(acc, 1.0, out=np.empty(10, np.float32), dtype=np.float16)
    with pytest.raises(DTypeError):
        agg.finalize(acc, 1.0, dtype=np.int16)
    with pytest.raises(InvalidArgumentError):
        agg.finalize(acc, 1.0, out=acc.view(np.float16)[1:11])


# ------------------------------------------------------- median, trimmed mean
def _sorted(xs):
    return np.sort(np.stack([x.astype(np.float64) for x in xs]), axis=0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.one_of(st.sampled_from(TAILS), st.integers(0, 300)),
       k=st.integers(1, 40), xd=st.sampled_from(X_DTYPES), data=st.data())
def test_median_and_trimmed_mean_match_sort_reference(seed, n, k, xd, data):
    rng = np.random.default_rng(seed)
    xs = [_data(rng, n, xd) for _ in range(k)]
    if k > 2:  # ties exercise the network's stability-free min/max
        xs[1] = xs[0].copy()
    trim = data.draw(st.integers(0, (k - 1) // 2))
    s = _sorted(xs)
    med_ref = np.median(s, axis=0)
    tm_ref = s[trim:k - trim].mean(axis=0)
    for ctx in (contextlib.nullcontext(), forced_portable()):
        with ctx:
            med = agg.median(xs, dtype=np.float64)
            tm = agg.trimmed_mean(xs, trim, dtype=np.float64)
        np.testing.assert_allclose(med, med_ref, rtol=1e-15, atol=1e-300)
        np.testing.assert_allclose(tm, tm_ref, rtol=1e-13, atol=1e-14)


def test_median_nan_gives_nan_inf_sorts(impl):
    xs = [np.array([1.0, np.nan, 5.0, np.inf], np.float32),
          np.array([2.0, 0.0, np.inf, np.inf], np.float32),
          np.array([3.0, 0.0, -np.inf, 1.0], np.float32)]
    ref = np.median(np.stack(xs), axis=0)
    got = agg.median(xs)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)  # [2, nan, 5, inf]
    tm = agg.trimmed_mean(xs, 1)
    np.testing.assert_array_equal(tm, ref)


def test_median_large_k_and_long_input():
    rng = np.random.default_rng(5)
    xs = [_data(rng, 37, np.float64) for _ in range(agg.MAX_ROBUST_INPUTS)]
    np.testing.assert_array_equal(agg.median(xs), np.median(np.stack(xs), axis=0))
    ys = [_misaligned(_data(rng, 100_003, np.float32), 2) for _ in range(8)]
    np.testing.assert_allclose(agg.median(ys), np.median(np.stack(ys), axis=0), rtol=1e-7)


def test_robust_rejects_bad_input():
    x = np.ones(5, np.float32)
    with pytest.raises(InvalidArgumentError):
        agg.median([])
    with pytest.raises(InvalidArgumentError):
        agg.median([x] * (agg.MAX_ROBUST_INPUTS + 1))
    with pytest.raises(ShapeError):
        agg.median([x, np.ones(6, np.float32)])
    with pytest.raises(DTypeError):
        agg.median([x, np.ones(5, np.float64)])
    with pytest.raises(InvalidArgumentError):
        agg.trimmed_mean([x, x, x, x], 2)
    with pytest.raises(InvalidArgumentError):
        agg.trimmed_mean([x, x, x], -1)
    with pytest.raises(ShapeError):
        agg.median([x, x], out=np.empty(4, np.float32))


# --------------------------------------------------------------------- norms
@pytest.mark.parametrize("xd", X_DTYPES, ids=str)
@pytest.mark.parametrize("n", [0, 1, 17, 1025, 5000])
def test_l2_norm_matches_numpy(impl, xd, n):
    x = _data(np.random.default_rng(n), n, xd)
    ref = np.linalg.norm(x.astype(np.float64))
    assert agg.l2_norm(x) == pytest.approx(ref, rel=1e-13, abs=0)


def test_l2_norm_nan_and_extreme_float64():
    assert np.isnan(agg.l2_norm(np.array([1.0, np.nan], np.float32)))
    assert agg.l2_norm(np.array([1e200, -1e200])) == pytest.approx(np.sqrt(2) * 1e200, rel=1e-15)
    assert agg.l2_norm(np.full(4, 1e-200)) == pytest.approx(2e-200, rel=1e-15)
    assert agg.l2_norm(np.array([np.inf, 1.0])) == np.inf


@pytest.mark.parametrize("xd", X_DTYPES, ids=str)
def test_clip_norm_scales_down_only(impl, xd):
    rng = np.random.default_rng(11)
    x = _data(rng, 999, xd, scale=3.0)
    norm = np.linalg.norm(x.astype(np.float64))
    y = x.copy()
    s = agg.clip_norm(y, norm / 4)
    assert s == pytest.approx(0.25, rel=1e-12)
    np.testing.assert_array_equal(y, (x.astype(np.float64) * s).astype(xd))
    z = x.copy()
    assert agg.clip_norm(z, norm * 2) == 1.0
    np.testing.assert_array_equal(z, x)
    assert agg.clip_norm(z, 0.0) == 0.0
    assert not np.any(z.astype(np.float64))


def test_clip_norm_rejects_non_finite_and_changes_nothing():
    x = np.array([1.0, np.inf, 2.0], np.float32)
    with pytest.raises(InvalidArgumentError):
        agg.clip_norm(x, 1.0)
    np.testing.assert_array_equal(x, [1.0, np.inf, 2.0])
    y = np.ones(3, np.float32)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidArgumentError):
            agg.clip_norm(y, bad)
    np.testing.assert_array_equal(y, 1.0)


# ------------------------------------------------------- WeightedAccumulator
def _update(rng, dtype=np.float32):
    return {"w": _data(rng, (3, 5), dtype).reshape(3, 5), "b": _data(rng, 7, dtype)}


def test_weighted_accumulator_is_fedavg():
    rng = np.random.default_rng(0)
    ups = [_update(rng) for _ in range(5)]
    ws = [10, 20, 5, 1, 64]
    a, b = agg.WeightedAccumulator(), agg.WeightedAccumulator(np.float64)
    for u, w in zip(ups, ws, strict=True):
        a.add(u, w)
    b.add_many(ups, ws)
    assert a.count == b.count == 5 and a.total_weight == b.total_weight == 100
    for res in (a.result(), b.result()):
        for name in ("w", "b"):
            ref = sum(w * u[name].astype(np.float64) for u, w in zip(ups, ws, strict=True)) / 100
            assert res[name].dtype == np.float32 and res[name].shape == ups[0][name].shape
            np.testing.assert_allclose(res[name], ref, rtol=1e-5, atol=1e-6)
    assert a.result(dtype=np.float16)["w"].dtype == np.float16


def test_weighted_accumulator_keeps_input_dtype_and_bf16():
    acc = agg.WeightedAccumulator()
    acc.add({"t": np.ones(4, BF16)}, 1.0)
    acc.add({"t": np.full(4, 3, BF16)}, 1.0)
    out = acc.result()["t"]
    assert out.dtype == BF16
    np.testing.assert_array_equal(out.astype(np.float32), 2.0)


def test_weighted_accumulator_rejects_mismatch_and_stays_unchanged():
    rng = np.random.default_rng(2)
    acc = agg.WeightedAccumulator()
    acc.add(_update(rng), 2.0)
    snapshot = {k: v.copy() for k, v in acc.result().items()}
    good = _update(rng)
    bad_updates = [
        ({"w": good["w"]}, ShapeError),  # missing name
        ({**good, "extra": np.ones(2, np.float32)}, ShapeError),
        ({"w": good["w"], "b": np.ones(8, np.float32)}, ShapeError),
        ({"w": good["w"], "b": np.ones(7, np.int64)}, DTypeError),
    ]
    for upd, exc in bad_updates:
        with pytest.raises(exc):
            acc.add(upd, 1.0)
        with pytest.raises(exc):
            acc.add_many([good, upd], [1.0, 1.0])
    with pytest.raises(InvalidArgumentError):
        acc.add(good, -1.0)
    with pytest.raises(ShapeError):
        acc.add_many([good], [1.0, 2.0])
    assert acc.count == 1 and acc.total_weight == 2.0
    for k, v in acc.result().items():
        np.testing.assert_array_equal(v, snapshot[k])


def test_weighted_accumulator_empty_and_zero_weight():
    acc = agg.WeightedAccumulator()
    with pytest.raises(InvalidArgumentError):
        acc.result()
    acc.add({"a": np.ones(3, np.float32)}, 0.0)
    with pytest.raises(InvalidArgumentError):
        acc.result()
    acc.reset()
    assert acc.count == 0 and acc.total_weight == 0.0
    with pytest.raises(DTypeError):
        agg.WeightedAccumulator(np.float16)


def test_reset_keep_buffers_reuses_memory_and_stays_exact():
    from cellnet.native.aggregate import WeightedAccumulator

    acc = WeightedAccumulator(np.float32)
    x = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    acc.add(x, 2.0)
    first = acc._acc["w"]
    acc.reset(keep_buffers=True)
    acc.add(x, 1.0)
    assert acc._acc["w"] is first  # the same memory, zeroed
    np.testing.assert_array_equal(acc.result()["w"], x["w"])
    acc.reset(keep_buffers=True)
    y = {"w": np.ones(4, np.float32)}  # another model: reallocated, no stale values
    acc.add(y, 1.0)
    assert acc._acc["w"] is not first
    np.testing.assert_array_equal(acc.result()["w"], y["w"])
    acc.reset()
    assert acc.count == 0 and acc._spare == {}
