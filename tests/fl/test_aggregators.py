"""Aggregators: in-time FedAvg and robust statistics against numpy, rejections change nothing."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cellnet.defs import MetaKey
from cellnet.errors import AggregationError, DuplicateContributionError, InvalidArgumentError
from cellnet.fl.aggregators import (
    CoordinateMedian,
    InTimeFedAvg,
    TrimmedMean,
    make_aggregator,
)
from cellnet.fl.dxo import DXO, DataKind
from cellnet.fl.filters import Quantize
from cellnet.native.aggregate import MAX_ROBUST_INPUTS

STEPS = MetaKey.NUM_STEPS_CURRENT_ROUND


def upd(seed: int, steps=None, kind=DataKind.WEIGHTS, rnd=None, scale=1.0, **arrays) -> DXO:
    rng = np.random.default_rng(seed)
    data = arrays or {"w": (scale * rng.standard_normal((3, 4))).astype(np.float32),
                      "b": scale * rng.standard_normal(5)}
    meta = {}
    if steps is not None:
        meta[STEPS] = steps
    if rnd is not None:
        meta[MetaKey.CURRENT_ROUND] = rnd
    return DXO(kind, data, meta)


def state(agg) -> tuple:
    """What a rejected contribution must leave untouched, including the would-be result."""
    result = {k: v.copy() for k, v in agg.aggregate().data.items()} if agg.count else None
    extra = (agg.total_weight, agg.clipped) if isinstance(agg, InTimeFedAvg) else ()
    return agg.contributors, extra, result


def assert_same_state(a, b) -> None:
    assert a[:2] == b[:2]
    if a[2] is None:
        assert b[2] is None
        return
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k])


# ------------------------------------------------------------------ FedAvg
@settings(max_examples=30, deadline=None)
@given(shape=hnp.array_shapes(max_dims=3, max_side=6),
       weights=st.lists(st.integers(0, 1000), min_size=1, max_size=6).filter(any),
       acc64=st.booleans())
def test_fedavg_matches_numpy_weighted_mean(shape, weights, acc64):
    rng = np.random.default_rng(len(weights))
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in weights]
    ys = [rng.standard_normal(shape) for _ in weights]
    agg = InTimeFedAvg(dtype=np.float64 if acc64 else np.float32)
    for i, (x, y, w) in enumerate(zip(xs, ys, weights, strict=True)):
        assert agg.accept(DXO(DataKind.WEIGHTS, {"x": x, "y": y}, {STEPS: w}), f"site-{i}")
    out = agg.aggregate()
    wsum = sum(weights)
    ref_x = sum(w * x.astype(np.float64) for w, x in zip(weights, xs, strict=True)) / wsum
    ref_y = sum(w * y for w, y in zip(weights, ys, strict=True)) / wsum
    assert out.kind is DataKind.WEIGHTS
    assert out.data["x"].dtype == np.float32 and out.data["y"].dtype == np.float64
    np.testing.assert_allclose(out.data["x"], ref_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.data["y"], ref_y, rtol=1e-12 if acc64 else 1e-5,
                               atol=1e-12 if acc64 else 1e-5)
    assert agg.total_weight == wsum and agg.count == len(weights)


def test_fedavg_weights_key_default_weight_round_and_meta():
    agg = InTimeFedAvg()
    agg.reset(round=3)
    assert agg.accept(upd(1, steps=1, rnd=3), "site-1")
    assert agg.accept(upd(2), "site-2")  # no weight: default 1, no round: accepted
    assert not agg.accept(upd(3, steps=100, rnd=2), "site-3")  # late result of round 2
    out = agg.aggregate()
    ref = (upd(1).data["w"].astype(np.float64) + upd(2).data["w"]) / 2
    np.testing.assert_allclose(out.data["w"], ref, rtol=1e-6)
    assert out.meta == {"contributors": ["site-1", "site-2"], "aggregator": "InTimeFedAvg",
                        MetaKey.CURRENT_ROUND: 3}
    strict = InTimeFedAvg(weights_key="n_samples", default_weight=None)
    with pytest.raises(AggregationError, match="n_samples"):
        strict.accept(upd(1, steps=4), "site-1")
    assert strict.accept(DXO(DataKind.WEIGHTS, upd(1).data, {"n_samples": 4}), "site-1")


def test_fedavg_weight_diff_and_reset_for_next_round():
    agg = InTimeFedAvg()
    agg.accept(upd(1, steps=2, kind=DataKind.WEIGHT_DIFF), "site-1")
    assert agg.aggregate().kind is DataKind.WEIGHT_DIFF
    with pytest.raises(AggregationError, match="this round holds"):
        agg.accept(upd(2, steps=2, kind=DataKind.WEIGHTS), "site-2")
    agg.reset(round=1)
    assert agg.count == 0 and agg.total_weight == 0 and agg.round == 1
    with pytest.raises(AggregationError, match="no contribution"):
        agg.aggregate()
    other = DXO(DataKind.WEIGHTS, {"z": np.ones(7, np.float16)}, {STEPS: 1})
    assert agg.accept(other, "site-1")  # new names and kind after reset; same site again
    out = agg.aggregate()
    assert out.data["z"].dtype == np.float16
    np.testing.assert_array_equal(out.data["z"], np.ones(7))
    with pytest.raises(InvalidArgumentError):
        agg.reset(round="1")


@pytest.mark.parametrize("bad, err, match", [
    (upd(9, steps=1), DuplicateContributionError, "already contributed"),
    (upd(9, steps=1, w=np.zeros((3, 4), np.float32)), AggregationError, "names differ"),
    (upd(9, steps=1, w=np.zeros((4, 3), np.float32), b=np.zeros(5)), AggregationError, "shape"),
    (upd(9, steps=1, w=np.zeros((3, 4), np.int32), b=np.zeros(5)), AggregationError, "int32"),
    (upd(9, steps=-1), AggregationError, ">= 0"),
    (upd(9, steps=float("nan")), AggregationError, "finite"),
    (upd(9, steps="many"), AggregationError, "number"),
    (upd(9, steps=1, kind=DataKind.WEIGHT_DIFF), AggregationError, "this round holds"),
    (DXO.metrics({"acc": 0.5}), AggregationError, "METRICS"),
    (DXO(DataKind.WEIGHTS, {}), AggregationError, "no arrays"),
    (Quantize("fp16").process(upd(9, steps=1)), AggregationError, "quantized"),
    ({"w": np.zeros((3, 4))}, AggregationError, "expected a DXO"),
])
def test_fedavg_rejection_leaves_the_accumulator_unchanged(bad, err, match):
    agg = InTimeFedAvg()
    agg.accept(upd(1, steps=3), "site-1")
    agg.accept(upd(2, steps=1), "site-2")
    before = state(agg)
    contributor = "site-1" if err is DuplicateContributionError else "site-3"
    with pytest.raises(err, match=match):
        agg.accept(bad, contributor)
    assert_same_state(before, state(agg))
    assert agg.accept(upd(3, steps=2), "site-3")  # still usable afterwards
    assert agg.count == 3 and agg.total_weight == 6


def test_fedavg_rejects_bad_contributor_and_config():
    agg = InTimeFedAvg()
    with pytest.raises(AggregationError, match="contributor"):
        agg.accept(upd(1), "")
    for kwargs in ({"dtype": np.float16}, {"dtype": "nope"}, {"clip_norm": 0},
                   {"clip_norm": -1.0}, {"default_weight": float("inf")}, {"weights_key": ""},
                   {"clip_norm": True}):
        with pytest.raises(InvalidArgumentError):
            InTimeFedAvg(**kwargs)
    zero = InTimeFedAvg()
    zero.accept(upd(1, steps=0), "site-1")
    with pytest.raises(AggregationError, match="weigh 0"):
        zero.aggregate()


def test_fedavg_holds_no_reference_to_accepted_updates():
    agg = InTimeFedAvg()
    d = upd(1, steps=1)
    ref = weakref.ref(d.data["w"])
    agg.accept(d, "site-1")
    del d
    gc.collect()
    assert ref() is None  # the server keeps the running sum only


def test_fedavg_clip_norm_bounds_each_weight_diff():
    big = upd(1, steps=1, kind=DataKind.WEIGHT_DIFF, scale=10.0)
    small = upd(2, steps=3, kind=DataKind.WEIGHT_DIFF, scale=0.01)
    c = 0.5
    agg = InTimeFedAvg(clip_norm=c, dtype=np.float64)
    agg.accept(big, "site-1")
    agg.accept(small, "site-2")
    assert agg.clipped == 1
    norm = np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in big.data.values()))
    s = c / norm
    out = agg.aggregate()
    for k in ("w", "b"):
        ref = (1 * s * big.data[k].astype(np.float64) + 3 * small.data[k]) / 4
        np.testing.assert_allclose(out.data[k], ref, rtol=1e-6, atol=1e-7)
    assert out.data["w"].dtype == np.float32
    np.testing.assert_array_equal(big.data["w"], upd(1, scale=10.0).data["w"])  # not modified
    unclipped = InTimeFedAvg(clip_norm=100.0)
    unclipped.accept(small, "site-2")
    np.testing.assert_allclose(unclipped.aggregate().data["b"], small.data["b"])
    assert unclipped.clipped == 0
    before = state(agg)
    with pytest.raises(AggregationError, match="WEIGHT_DIFF"):
        InTimeFedAvg(clip_norm=1.0).accept(upd(3), "site-1")
    nan = upd(4, kind=DataKind.WEIGHT_DIFF, w=np.full((3, 4), np.nan, np.float32),
              b=np.zeros(5))
    with pytest.raises(AggregationError, match="NaN"):
        agg.accept(nan, "site-3")
    assert_same_state(before, state(agg))


# ------------------------------------------------------------------ robust
@settings(max_examples=30, deadline=None)
@given(shape=hnp.array_shapes(max_dims=2, max_side=8), k=st.integers(1, 9),
       trim=st.integers(0, 4), f64=st.booleans())
def test_median_and_trimmed_mean_match_numpy(shape, k, trim, f64):
    rng = np.random.default_rng(k)
    dt = np.float64 if f64 else np.float32
    xs = [rng.standard_normal(shape).astype(dt) for _ in range(k)]
    med, tm = CoordinateMedian(), TrimmedMean(trim=trim)
    for i, x in enumerate(xs):
        d = DXO(DataKind.WEIGHT_DIFF, {"x": x}, {STEPS: i + 1})  # weights are ignored
        assert med.accept(d, f"s{i}") and tm.accept(d, f"s{i}")
    stacked = np.stack(xs).astype(np.float64)
    m = med.aggregate()
    assert m.kind is DataKind.WEIGHT_DIFF and m.data["x"].dtype == dt
    np.testing.assert_allclose(m.data["x"], np.median(stacked, axis=0), rtol=1e-6)
    if 2 * trim >= k:
        with pytest.raises(AggregationError, match="trim"):
            tm.aggregate()
    else:
        ref = np.sort(stacked, axis=0)[trim:k - trim].mean(axis=0)
        np.testing.assert_allclose(tm.aggregate().data["x"], ref, rtol=1e-5, atol=1e-6)


def test_median_resists_an_outlier_and_keeps_dtype():
    agg = CoordinateMedian()
    for i, v in enumerate([1.0, 2.0, 60000.0]):
        agg.accept(DXO(DataKind.WEIGHTS, {"x": np.full(4, v, np.float16)}), f"s{i}")
    out = agg.aggregate().data["x"]
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, np.full(4, 2.0))


@pytest.mark.parametrize("cls", [CoordinateMedian, TrimmedMean])
def test_robust_rejections_change_nothing_and_count_is_bounded(cls):
    agg = cls(max_count=3)
    agg.accept(upd(1), "s1")
    agg.accept(upd(2), "s2")
    before = state(agg) if cls is CoordinateMedian else (agg.contributors, (), None)
    bad = [
        (upd(9, w=np.zeros((3, 4), np.float32)), "names differ"),
        (upd(9, w=np.zeros((3, 4), np.float64), b=np.zeros(5)), "float64"),
        (upd(9, w=np.zeros((2, 6), np.float32), b=np.zeros(5)), r"\[2, 6\]"),
        (upd(9, kind=DataKind.WEIGHT_DIFF), "this round holds"),
    ]
    for d, match in bad:
        with pytest.raises(AggregationError, match=match):
            agg.accept(d, "s3")
    with pytest.raises(DuplicateContributionError):
        agg.accept(upd(3), "s1")
    after = state(agg) if cls is CoordinateMedian else (agg.contributors, (), None)
    assert_same_state(before, after)
    agg.accept(upd(3), "s3")
    with pytest.raises(AggregationError, match="at most 3"):
        agg.accept(upd(4), "s4")
    assert agg.count == 3
    agg.reset()
    assert agg.count == 0


def test_robust_config_errors():
    for bad in (0, MAX_ROBUST_INPUTS + 1, True, 2.5):
        with pytest.raises(InvalidArgumentError, match="max_count"):
            CoordinateMedian(max_count=bad)
    for bad in (-1, 1.5, False):
        with pytest.raises(InvalidArgumentError, match="trim"):
            TrimmedMean(trim=bad)


def test_make_aggregator():
    agg = make_aggregator({"name": "InTimeFedAvg", "args": {"clip_norm": 2.0,
                                                            "dtype": "float64"}})
    assert isinstance(agg, InTimeFedAvg) and agg.clip_norm == 2.0 and agg.dtype == np.float64
    tm = make_aggregator({"name": "TrimmedMean", "args": {"trim": 2}})
    assert isinstance(tm, TrimmedMean) and tm.trim == 2
    assert isinstance(make_aggregator({"name": "CoordinateMedian"}), CoordinateMedian)
    for spec, match in (({"name": "FedProx"}, "unknown aggregator"),
                        ({"name": "TrimmedMean", "args": {"cut": 1}}, "bad arguments"),
                        ({"name": "TrimmedMean", "args": [1]}, "args must be a dict"),
                        ({"name": "TrimmedMean", "extra": 1}, "spec"),
                        ("TrimmedMean", "spec")):
        with pytest.raises(InvalidArgumentError, match=match):
            make_aggregator(spec)


def test_update_norm_is_the_global_l2_norm_and_refuses_nan():
    from cellnet.fl.aggregators import update_norm

    dxo = DXO(DataKind.WEIGHT_DIFF, {"a": np.array([3.0], np.float32),
                                     "b": np.array([[4.0]], np.float64)})
    assert update_norm(dxo, "site-1") == pytest.approx(5.0)
    bad = DXO(DataKind.WEIGHT_DIFF, {"a": np.array([1.0, np.nan], np.float32)})
    with pytest.raises(AggregationError, match="site-1: the update holds NaN"):
        update_norm(bad, "site-1")
