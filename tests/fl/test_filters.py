"""DXO filters: quantization round trips and error bounds, Gaussian privacy, exclusion, specs."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cellnet.defs import MetaKey
from cellnet.errors import (
    CorruptDataError,
    DTypeError,
    FilterConfigError,
    FilterError,
    InvalidArgumentError,
)
from cellnet.fl.dxo import DXO, DataKind
from cellnet.fl.filters import (
    SCALES_SUFFIX,
    Dequantize,
    ExcludeVars,
    Filter,
    FilterChain,
    GaussianPrivacy,
    Quantize,
    filter_names,
    make_filter,
    register_filter,
)
from cellnet.native import pack

BF16 = np.dtype(ml_dtypes.bfloat16)


def model(kind=DataKind.WEIGHTS, seed=0, **meta) -> DXO:
    rng = np.random.default_rng(seed)
    data = {
        "conv.w": rng.standard_normal((4, 3, 3)).astype(np.float32),
        "conv.b": rng.standard_normal(4),  # float64
        "fc.w": rng.standard_normal((5, 7)).astype(np.float16),
        "bn.count": np.arange(6, dtype=np.int64),
    }
    return DXO(kind, data, meta)


def snapshot(dxo: DXO):
    return ({k: v.copy() for k, v in dxo.data.items()}, json.dumps(dxo.meta, sort_keys=True))


def assert_unchanged(dxo: DXO, snap) -> None:
    data, meta = snap
    assert dxo.data.keys() == data.keys()
    for k, v in data.items():
        assert dxo.data[k].dtype == v.dtype
        np.testing.assert_array_equal(dxo.data[k], v)
    assert json.dumps(dxo.meta, sort_keys=True) == meta


# ------------------------------------------------------------------ DXO
def test_dxo_validates_its_fields():
    with pytest.raises(InvalidArgumentError, match="kind"):
        DXO("MODEL", {})
    with pytest.raises(DTypeError, match="numpy array"):
        DXO(DataKind.WEIGHTS, {"a": [1.0, 2.0]})
    with pytest.raises(DTypeError, match="names must be str"):
        DXO(DataKind.WEIGHTS, {1: np.zeros(2)})
    with pytest.raises(DTypeError, match="meta"):
        DXO(DataKind.WEIGHTS, {}, meta=[1])
    assert DXO("WEIGHT_DIFF", {}).kind is DataKind.WEIGHT_DIFF


def test_dxo_metrics_and_bytes_round_trip():
    m = DXO.metrics({"acc": 0.9, "loss": 1}, {MetaKey.CURRENT_ROUND: 2})
    assert m.kind is DataKind.METRICS and m.data["acc"].dtype == np.float64
    with pytest.raises(InvalidArgumentError, match="not a number"):
        DXO.metrics({"acc": "high"})
    d = Quantize("int8").process(model(DataKind.WEIGHT_DIFF, NUM_STEPS_CURRENT_ROUND=3))
    back = DXO.from_bytes(bytes(d.to_bytes()))
    assert back.kind is DataKind.WEIGHT_DIFF
    assert back.meta == json.loads(json.dumps(d.meta))
    for k, v in d.data.items():
        np.testing.assert_array_equal(back.data[k], v)
        assert back.data[k].dtype == v.dtype
    restored = Dequantize().process(back)
    assert restored.data["conv.w"].dtype == np.float32


def test_dxo_from_bytes_rejects_a_pack_without_kind():
    with pytest.raises(CorruptDataError, match="data kind"):
        DXO.from_bytes(pack.encode({"a": np.zeros(2)}, {"x": 1}))
    with pytest.raises(CorruptDataError, match="unknown data kind"):
        DXO.from_bytes(pack.encode({"a": np.zeros(2)}, {MetaKey.DATA_KIND.value: "MODEL"}))


# ------------------------------------------------------------------ quantization
@pytest.mark.parametrize("method", ["fp16", "bf16", "int8"])
def test_quantize_round_trip_restores_dtypes_shapes_and_leaves_input_alone(method):
    d = model(NUM_STEPS_CURRENT_ROUND=5)
    snap = snapshot(d)
    q = Quantize(method).process(d)
    assert_unchanged(d, snap)
    assert q.meta[MetaKey.PROCESSED_ALGORITHM] == method
    keys = q.meta[MetaKey.PROCESSED_KEYS]
    assert keys["conv.w"] == {"dtype": "float32", "shape": [4, 3, 3],
                              **({"block": 256} if method == "int8" else {})}
    assert "bn.count" not in keys and q.data["bn.count"] is d.data["bn.count"]
    compact = {"fp16": np.float16, "bf16": BF16, "int8": np.int8}[method]
    assert q.data["conv.w"].dtype == compact
    if method == "int8":
        assert q.data["conv.w" + SCALES_SUFFIX].dtype == np.float32
        assert "fc.w" in keys  # int8 compacts float16 too
    else:
        assert "fc.w" not in keys and q.data["fc.w"] is d.data["fc.w"]  # already 2 bytes
    r = Dequantize().process(q)
    assert r.data.keys() == d.data.keys()
    assert MetaKey.PROCESSED_ALGORITHM not in r.meta and MetaKey.PROCESSED_KEYS not in r.meta
    for k, v in d.data.items():
        assert r.data[k].dtype == v.dtype and r.data[k].shape == v.shape
    np.testing.assert_array_equal(r.data["bn.count"], d.data["bn.count"])
    assert [e["name"] for e in r.history] == ["Quantize", "Dequantize"]
    assert r.history[0]["args"] == {"method": method, "block": 256}
    assert r.history[1]["keys"] == sorted(keys)
    assert r.meta["NUM_STEPS_CURRENT_ROUND"] == 5


_finite32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=40), elements=_finite32),
       method=st.sampled_from(["fp16", "bf16"]))
def test_half_precision_error_bound(x, method):
    d = DXO(DataKind.WEIGHTS, {"x": x})
    r = Dequantize().process(Quantize(method).process(d)).data["x"]
    assert r.dtype == np.float32 and r.shape == x.shape
    ax = np.abs(x.astype(np.float64))
    err = np.abs(r.astype(np.float64) - ax * np.sign(x))
    if method == "fp16":
        bound = np.maximum(2.0**-11 * ax, 2.0**-25)
    else:
        bound = np.maximum(2.0**-8 * ax, 2.0**-134)
    assert np.all(err <= bound)


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(1, 700),
                    elements=st.floats(-1e6, 1e6, allow_nan=False)),
       block=st.sampled_from([1, 7, 64, 256]))
def test_int8_error_bound_per_block(x, block):
    d = DXO(DataKind.WEIGHT_DIFF, {"x": x})
    r = Dequantize().process(Quantize("int8", block=block).process(d)).data["x"]
    assert r.dtype == np.float64
    nb = -(-x.size // block)
    pad = np.zeros(nb * block)
    pad[: x.size] = np.abs(x)
    bound = np.repeat(pad.reshape(nb, block).max(axis=1), block)[: x.size] / 254
    assert np.all(np.abs(r - x) <= bound * (1 + 1e-5) + 1e-30)


def test_bf16_arrays_come_back_as_bf16_after_int8():
    d = DXO(DataKind.WEIGHTS, {"x": np.linspace(-1, 1, 50).astype(BF16)})
    r = Dequantize().process(Quantize("int8").process(d))
    assert r.data["x"].dtype == BF16


def test_quantize_refuses_bad_input_with_typed_errors():
    d = model()
    q = Quantize("fp16").process(d)
    with pytest.raises(FilterError, match="already processed"):
        Quantize("int8").process(q)
    big = DXO(DataKind.WEIGHTS, {"x": np.array([1.0, 1e6], np.float32)})
    with pytest.raises(FilterError, match="float16's range"):
        Quantize("fp16").process(big)
    assert Quantize("bf16").process(big).data["x"].dtype == BF16  # bf16 has the range
    inf_in = DXO(DataKind.WEIGHTS, {"x": np.array([np.inf, 1.0], np.float32)})
    assert np.isinf(Quantize("fp16").process(inf_in).data["x"][0])  # inf stays inf
    nan = DXO(DataKind.WEIGHTS, {"x": np.array([np.nan, 1.0], np.float32)})
    with pytest.raises(FilterError, match="int8"):
        Quantize("int8").process(nan)
    with pytest.raises(FilterError, match="reserved"):
        Quantize("int8").process(DXO(DataKind.WEIGHTS, {"x" + SCALES_SUFFIX: np.zeros(2)}))
    with pytest.raises(FilterError, match="DXO"):
        Quantize().process({"x": np.zeros(2)})
    with pytest.raises(FilterConfigError, match="method"):
        Quantize("fp8")
    with pytest.raises(FilterConfigError, match="block"):
        Quantize("int8", block=0)


def test_dequantize_passes_plain_dxo_and_rejects_inconsistent_meta():
    d = model()
    r = Dequantize().process(d)
    assert r.data == d.data and r.history == [{"name": "Dequantize", "args": {}, "keys": []}]
    q = Quantize("int8").process(d)
    no_scales = q.replace(data={k: v for k, v in q.data.items() if k != "conv.w" + SCALES_SUFFIX})
    with pytest.raises(FilterError, match=r"conv\.w"):
        Dequantize().process(no_scales)
    bad_alg = q.replace(meta={**q.meta, MetaKey.PROCESSED_ALGORITHM: "zip"})
    with pytest.raises(FilterError, match="zip"):
        Dequantize().process(bad_alg)
    bad_keys = q.replace(meta={**q.meta, MetaKey.PROCESSED_KEYS: ["conv.w"]})
    with pytest.raises(FilterError, match="PROCESSED_KEYS"):
        Dequantize().process(bad_keys)
    h = Quantize("fp16").process(d)
    wrong_shape = h.replace(meta={**h.meta, MetaKey.PROCESSED_KEYS: {
        "conv.w": {"dtype": "float32", "shape": [36]}}})
    with pytest.raises(FilterError, match="shape"):
        Dequantize().process(wrong_shape)


# ------------------------------------------------------------------ Gaussian privacy
def diff(arrays) -> DXO:
    return DXO(DataKind.WEIGHT_DIFF, arrays)


def test_gaussian_noise_statistics_match_sigma():
    n = 400_000
    f = GaussianPrivacy(clip_norm=2.0, noise_multiplier=0.5, seed=7)
    assert f.sigma == 1.0
    out = f.process(diff({"w": np.zeros(n, np.float32)})).data["w"]
    assert out.dtype == np.float32
    assert abs(out.mean()) < 5 * f.sigma / np.sqrt(n)
    assert out.std() == pytest.approx(f.sigma, rel=0.01)
    entry = f.process(diff({"w": np.zeros(3, np.float32)})).history[-1]
    assert entry["sigma"] == 1.0 and entry["mode"] == "global" and "norm" not in entry


def test_gaussian_is_deterministic_with_a_seed_and_differs_across_seeds():
    d = diff({"a": np.ones(100, np.float32), "b": np.ones((3, 3))})
    snap = snapshot(d)
    a1 = GaussianPrivacy(1.0, 1.0, seed=3).process(d)
    a2 = GaussianPrivacy(1.0, 1.0, seed=3).process(d)
    b = GaussianPrivacy(1.0, 1.0, seed=4).process(d)
    assert_unchanged(d, snap)
    for k in d.data:
        np.testing.assert_array_equal(a1.data[k], a2.data[k])
        assert not np.array_equal(a1.data[k], b.data[k])
        assert a1.data[k].dtype == d.data[k].dtype


def test_global_clip_scales_the_whole_update_to_clip_norm():
    a, b = np.full(30, 3.0, np.float32), np.full((4, 5), -2.0)
    norm = np.sqrt(np.sum(a.astype(np.float64) ** 2) + np.sum(b**2))
    out = GaussianPrivacy(clip_norm=1.5, noise_multiplier=0.0).process(diff({"a": a, "b": b}))
    s = 1.5 / norm
    np.testing.assert_allclose(out.data["a"], a * s, rtol=1e-6)
    np.testing.assert_allclose(out.data["b"], b * s, rtol=1e-12)
    total = np.sqrt(sum(np.sum(x.astype(np.float64) ** 2) for x in out.data.values()))
    assert total == pytest.approx(1.5, rel=1e-6)
    small = diff({"a": np.full(4, 0.1, np.float32)})
    np.testing.assert_array_equal(
        GaussianPrivacy(clip_norm=10.0, noise_multiplier=0.0).process(small).data["a"],
        small.data["a"])


def test_per_array_clip_bounds_each_array():
    d = diff({"a": np.full(16, 1.0), "b": np.full(4, 0.1), "c": np.full(9, -5.0, np.float16)})
    out = GaussianPrivacy(clip_norm=2.0, noise_multiplier=0.0, per_array=True).process(d)
    assert np.linalg.norm(out.data["a"]) == pytest.approx(2.0)
    np.testing.assert_array_equal(out.data["b"], d.data["b"])  # norm 0.2 < 2
    assert out.data["c"].dtype == np.float16
    assert np.linalg.norm(out.data["c"].astype(np.float64)) == pytest.approx(2.0, rel=1e-3)
    assert out.history[-1]["mode"] == "per_array"


def test_gaussian_rejects_bad_input():
    f = GaussianPrivacy(1.0, 1.0, seed=0)
    with pytest.raises(FilterError, match="WEIGHT_DIFF"):
        f.process(DXO(DataKind.WEIGHTS, {"a": np.zeros(3)}))
    with pytest.raises(DTypeError, match="ExcludeVars"):
        f.process(diff({"a": np.zeros(3), "n": np.arange(3)}))
    with pytest.raises(FilterError, match="NaN"):
        f.process(diff({"a": np.array([np.nan, 1.0])}))
    with pytest.raises(FilterError, match="before Quantize"):
        f.process(Quantize("fp16").process(diff({"a": np.zeros(3)})))
    for bad in ({"clip_norm": 0, "noise_multiplier": 1}, {"clip_norm": -1, "noise_multiplier": 1},
                {"clip_norm": 1, "noise_multiplier": float("nan")},
                {"clip_norm": 1, "noise_multiplier": 1, "seed": -1},
                {"clip_norm": True, "noise_multiplier": 1},
                {"clip_norm": 1, "noise_multiplier": 1, "per_array": "yes"}):
        with pytest.raises(FilterConfigError):
            GaussianPrivacy(**bad)


# ------------------------------------------------------------------ ExcludeVars
def test_exclude_vars_by_name_and_pattern_records_what_it_dropped():
    d = model()
    out = ExcludeVars(names=["conv.b"], patterns=[r"^bn\.", "nomatch"]).process(d)
    assert sorted(out.data) == ["conv.w", "fc.w"]
    assert out.history == [{"name": "ExcludeVars",
                            "args": {"names": ["conv.b"], "patterns": [r"^bn\.", "nomatch"]},
                            "excluded": ["bn.count", "conv.b"]}]
    assert sorted(d.data) == ["bn.count", "conv.b", "conv.w", "fc.w"]


def test_exclude_vars_on_a_quantized_dxo_drops_scales_and_processed_keys():
    q = Quantize("int8").process(model())
    out = ExcludeVars(patterns=["conv"]).process(q)
    assert sorted(out.data) == ["bn.count", "fc.w", "fc.w" + SCALES_SUFFIX]
    assert list(out.meta[MetaKey.PROCESSED_KEYS]) == ["fc.w"]
    assert "conv.w" in q.meta[MetaKey.PROCESSED_KEYS]  # input untouched
    r = Dequantize().process(out)
    assert r.data["fc.w"].dtype == np.float16


def test_exclude_vars_config_errors():
    with pytest.raises(FilterConfigError, match="bad pattern"):
        ExcludeVars(patterns=["("])
    with pytest.raises(FilterConfigError, match="at least one"):
        ExcludeVars()
    with pytest.raises(FilterConfigError, match="not a string"):
        ExcludeVars(names="conv.w")
    with pytest.raises(FilterConfigError, match="lists of strings"):
        ExcludeVars(names=[1])


# ------------------------------------------------------------------ chains and specs
def test_chain_from_json_spec_applies_in_order_and_round_trips():
    spec = [
        {"name": "ExcludeVars", "args": {"names": ["bn.count"]}},
        {"name": "GaussianPrivacy", "args": {"clip_norm": 1.0, "noise_multiplier": 0.01,
                                             "seed": 1}},
        {"name": "Quantize", "args": {"method": "int8", "block": 64}},
    ]
    chain = make_filter(json.loads(json.dumps(spec)))
    assert isinstance(chain, FilterChain) and len(chain) == 3
    out = chain.process(model(DataKind.WEIGHT_DIFF))
    assert [e["name"] for e in out.history] == ["ExcludeVars", "GaussianPrivacy", "Quantize"]
    assert out.data["conv.w"].dtype == np.int8
    json.dumps(out.meta)  # history and meta stay JSON-able
    again = make_filter(json.loads(json.dumps(chain.spec())))
    np.testing.assert_array_equal(again.process(model(DataKind.WEIGHT_DIFF)).data["conv.w"],
                                  out.data["conv.w"])
    assert again.spec() == chain.spec()
    back = Dequantize().process(out)
    total = np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in back.data.values()))
    assert total < 1.5  # clipped to 1 plus small noise


@pytest.mark.parametrize("spec, match", [
    ({"name": "Compress"}, "unknown filter"),
    ({"args": {}}, "unknown filter"),
    ({"name": "Quantize", "args": {"method": "fp16", "bits": 4}}, "bad arguments"),
    ({"name": "Quantize", "args": {"method": "fp4"}}, "Quantize: .*method"),
    ({"name": "Quantize", "args": ["fp16"]}, "args must be a dict"),
    ({"name": "Quantize", "config": {}}, "unknown keys"),
    ("Quantize", "dict or list"),
    ([{"name": "Quantize"}, {"name": "Nope"}], "unknown filter"),
])
def test_make_filter_errors(spec, match):
    with pytest.raises(FilterConfigError, match=match):
        make_filter(spec)


def test_register_a_custom_filter():
    class Scale(Filter):
        name = "Scale"

        def __init__(self, factor: float = 2.0):
            self.factor = factor

        def args(self):
            return {"factor": self.factor}

        def _process(self, dxo):
            data = {k: v * self.factor for k, v in dxo.data.items()}
            return dxo.with_history(self._entry(), data=data)

    register_filter("Scale", Scale)
    assert "Scale" in filter_names()
    out = make_filter({"name": "Scale", "args": {"factor": 3.0}})(diff({"a": np.ones(2)}))
    np.testing.assert_array_equal(out.data["a"], [3.0, 3.0])
    assert out.history == [{"name": "Scale", "args": {"factor": 3.0}}]
    with pytest.raises(FilterConfigError):
        register_filter("", Scale)
    with pytest.raises(FilterConfigError, match="takes filters"):
        FilterChain([Scale(), "Quantize"])
