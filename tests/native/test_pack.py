"""Tensor pack: round trips, zero-copy views, hostile input, limits, segments."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cellnet.errors import (
    BufferTooSmallError,
    ChecksumError,
    CorruptDataError,
    DTypeError,
    InvalidArgumentError,
    LimitExceededError,
    TruncatedError,
    UnsupportedVersionError,
)
from cellnet.native import crc32c, dtypes, ffi, lib
from cellnet.native.pack import (
    PackLimits,
    TensorPack,
    decode,
    encode,
    encode_segments,
    packed_size,
)

HDR = struct.Struct("<4sHHIIQQQQQQ")  # magic ver flags n crc head total meta_off meta_len ndims rsv
ENTRY = struct.Struct("<QQQIIBB6x")  # data_off nbytes name_off name_len crc dtype ndim
HDR_FIELDS = ("magic", "version", "flags", "n", "crc", "head_len", "total_len", "meta_off",
              "meta_len", "n_dims", "reserved")
ENTRY_FIELDS = ("data_off", "nbytes", "name_off", "name_len", "crc", "dtype", "ndim")


def small_pack() -> dict[str, np.ndarray]:
    return {
        "wt": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([1, -2, 3], dtype=np.int16),
        "s": np.array(2.5),
        "e": np.zeros((0, 5), dtype=np.uint8),
    }


def resign(buf: bytearray) -> bytearray:
    """Recompute the head CRC so crafted fields reach the structural checks."""
    head_len = struct.unpack_from("<Q", buf, 16)[0]
    struct.pack_into("<I", buf, 12, 0)
    struct.pack_into("<I", buf, 12, crc32c(memoryview(buf)[:head_len]))
    return buf


def craft(buf, entry: int | None = None, **fields) -> bytearray:
    """Copy of a pack with header (or entry ``entry``) fields replaced, re-signed."""
    out = bytearray(buf)
    st_, base, names = (HDR, 0, HDR_FIELDS) if entry is None else (ENTRY, 64 + 40 * entry,
                                                                   ENTRY_FIELDS)
    vals = dict(zip(names, st_.unpack_from(out, base), strict=True))
    vals.update(fields)
    st_.pack_into(out, base, *(vals[k] for k in names))
    return resign(out)


def raw_pack(tensors, meta: bytes) -> bytearray:
    """A pack whose metadata is the given raw bytes (Python would never write these)."""
    from cellnet.native.pack import _Plan

    plan = _Plan(tensors, None, ())
    plan.meta = meta
    head, total = ffi.new("uint64_t *"), ffi.new("uint64_t *")
    assert lib.cn_pack_plan(plan.items, len(plan.arrays), len(meta), head, total) == 0
    out = bytearray(total[0])
    plan.write(out, copy_data=True)
    return out


# ------------------------------------------------------------- round trips
DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
          np.uint64, np.float16, np.float32, np.float64]
if dtypes.BFLOAT16 is not None:
    DTYPES.append(dtypes.BFLOAT16)

arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
                          elements=st.just(1) if dt == dtypes.BFLOAT16 else None))
meta_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                              max_size=3),
    max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensors=st.dictionaries(st.text(min_size=0, max_size=12), arrays, max_size=6),
       meta=st.none() | st.dictionaries(st.text(max_size=6), meta_values, max_size=4))
def test_round_trip(tensors, meta):
    buf = encode(tensors, meta)
    assert len(buf) == packed_size(tensors, meta)
    assert len(buf) % 64 == 0
    pack = decode(buf)
    assert list(pack) == list(tensors)
    assert pack.meta == (meta or {})
    for name, arr in tensors.items():
        got = pack[name]
        assert got.dtype == arr.dtype and got.shape == arr.shape
        assert got.tobytes() == arr.tobytes()
    assert b"".join(encode_segments(tensors, meta)) == bytes(buf)
    out = bytearray(len(buf) + 100)
    assert bytes(encode(tensors, meta, out=out)) == bytes(buf)


def test_data_is_64_byte_aligned_in_the_pack():
    buf = encode(small_pack())
    base = np.frombuffer(buf, np.uint8).ctypes.data
    for arr in decode(buf).values():
        assert (arr.ctypes.data - base) % 64 == 0


def test_views_are_read_only_and_share_memory():
    buf = bytearray(encode(small_pack()))
    pack = decode(buf)
    whole = np.frombuffer(buf, dtype=np.uint8)
    for arr in pack.values():
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr.flags.writeable = True
    assert np.shares_memory(pack["wt"], whole)
    off = pack["wt"].ctypes.data - whole.ctypes.data
    struct.pack_into("<f", buf, off, 42.0)  # writing the buffer shows through the view
    assert pack["wt"][0, 0] == 42.0


def test_zero_d_empty_and_noncontiguous():
    base = np.arange(30, dtype=np.int32).reshape(5, 6)
    t = {"nc": base[:, ::2], "t": base.T, "z": np.float32(7), "e": np.empty((3, 0)), "l": [1, 2]}
    pack = decode(encode(t))
    assert pack["z"].shape == () and pack["z"] == 7
    assert pack["e"].shape == (3, 0)
    np.testing.assert_array_equal(pack["nc"], base[:, ::2])
    np.testing.assert_array_equal(pack["t"], base.T)
    np.testing.assert_array_equal(pack["l"], [1, 2])
    empty = decode(encode({}))
    assert len(empty) == 0 and empty.meta == {}


def test_unicode_names_and_trailing_bytes_ignored():
    t = {"层.weight": np.ones(3), "": np.zeros(2)}
    buf = bytes(encode(t, {"k": "v"}))
    pack = decode(buf + b"\x00" * 100)
    assert set(pack) == set(t) and pack.nbytes == len(buf)


# -------------------------------------------------------------- bfloat16
def test_bfloat16_with_ml_dtypes():
    ml = pytest.importorskip("ml_dtypes")
    x = np.array([1.5, -2.0, 3.25], dtype=ml.bfloat16)
    pack = decode(encode({"x": x}))
    assert pack["x"].dtype == ml.bfloat16 and pack.cn_dtype("x") == lib.CN_BF16
    assert pack["x"].tobytes() == x.tobytes()


def test_bfloat16_without_ml_dtypes(monkeypatch):
    bits = np.array([0x3FC0, 0xC000], dtype=np.uint16)  # 1.5, -2.0
    monkeypatch.setattr(dtypes, "BFLOAT16", None)
    buf = encode({"x": bits, "u": bits}, bf16_names={"x"})
    pack = decode(buf)
    assert pack.cn_dtype("x") == lib.CN_BF16 and pack.cn_dtype("u") == lib.CN_U16
    assert pack["x"].dtype == np.uint16 and pack["x"].tolist() == [0x3FC0, 0xC000]
    monkeypatch.undo()
    if dtypes.BFLOAT16 is not None:  # the same bytes read back as real bfloat16
        assert decode(buf)["x"].astype(np.float32).tolist() == [1.5, -2.0]


def test_bf16_names_must_exist_and_be_16_bit():
    with pytest.raises(InvalidArgumentError):
        encode({"x": np.zeros(2, np.uint16)}, bf16_names={"y"})
    with pytest.raises(DTypeError):
        encode({"x": np.zeros(2, np.float32)}, bf16_names={"x"})


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("value", [np.array([object()]), np.zeros(2, np.complex64),
                                   np.array(["ab"]), np.zeros(2, ">f4")])
def test_unsupported_dtypes(value):
    with pytest.raises(DTypeError):
        encode({"x": value})


@pytest.mark.parametrize(("tensors", "meta"), [
    ({1: np.zeros(1)}, None),
    ([("a", np.zeros(1))], None),
    ({"a": np.zeros(1)}, [1, 2]),
    ({"a": np.zeros(1)}, {"k": {1, 2}}),
    ({"a": np.zeros(1)}, {"k": np.zeros(1)}),
])
def test_bad_names_and_meta(tensors, meta):
    with pytest.raises(TypeError):
        encode(tensors, meta)


def test_out_too_small_or_read_only_changes_nothing():
    t = small_pack()
    out = bytearray(b"\xab" * (packed_size(t) - 1))
    with pytest.raises(BufferTooSmallError):
        encode(t, out=out)
    assert out == b"\xab" * len(out)
    with pytest.raises(TypeError):
        encode(t, out=bytes(packed_size(t)))


def test_native_plan_rejects_65_dims():
    shape = ffi.new("uint64_t[]", [1] * 65)
    item = ffi.new("cn_pack_item *", {"dtype": lib.CN_F32, "ndim": 65, "shape": shape})
    head, total = ffi.new("uint64_t *"), ffi.new("uint64_t *")
    assert lib.cn_pack_plan(item, 1, 0, head, total) == lib.CN_E_LIMIT


# ----------------------------------------------------------- hostile packs
@pytest.fixture(scope="module")
def packed() -> bytes:
    return bytes(encode(small_pack(), {"round": 1, "who": "site-1"}))


def test_every_truncation_is_rejected(packed):
    for n in range(len(packed)):
        with pytest.raises(CorruptDataError) as info:
            decode(packed[:n])
        assert isinstance(info.value, TruncatedError | CorruptDataError)
    head_len = HDR.unpack_from(packed)[5]
    for n in range(head_len, len(packed)):  # head complete, data missing
        with pytest.raises(TruncatedError):
            decode(packed[:n], verify=False)


def test_every_head_byte_flip_is_detected(packed):
    head_len = HDR.unpack_from(packed)[5]
    for i in range(head_len):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(packed)
            bad[i] ^= mask
            with pytest.raises(CorruptDataError):
                decode(bad, verify=False)


def test_corrupt_data_byte(packed):
    pack = decode(packed)
    whole = np.frombuffer(packed, np.uint8)
    off = pack["b"].ctypes.data - whole.ctypes.data
    bad = bytearray(packed)
    bad[off + 1] ^= 0x04
    with pytest.raises(ChecksumError):
        decode(bad)
    lazy = decode(bad, verify=False)  # head is fine: no error until verified
    lazy.verify("wt")
    with pytest.raises(ChecksumError):
        lazy.verify("b")
    with pytest.raises(ChecksumError):
        lazy.verify()
    with pytest.raises(KeyError):
        lazy.verify("nope")


def test_unknown_version_and_bad_magic(packed):
    with pytest.raises(UnsupportedVersionError):
        decode(craft(packed, version=2))
    with pytest.raises(CorruptDataError):
        decode(b"XXXX" + packed[4:])


@pytest.mark.parametrize(("fields", "error"), [
    ({"n": 2**32 - 1}, LimitExceededError),
    ({"flags": 1}, CorruptDataError),
    ({"reserved": 1}, CorruptDataError),
    ({"head_len": 2**64 - 64}, CorruptDataError),
    ({"head_len": 2**63, "total_len": 2**63}, TruncatedError),
    ({"head_len": 100}, CorruptDataError),
    ({"total_len": 2**64 - 64}, CorruptDataError),
    ({"meta_off": 2**64 - 8}, CorruptDataError),
    ({"meta_len": 2**64 - 1}, LimitExceededError),
    ({"n_dims": 2**63}, CorruptDataError),
])
def test_hostile_header_fields(packed, fields, error):
    tracemalloc.start()
    try:
        with pytest.raises(error):
            decode(craft(packed, **fields), limits=PackLimits())
        assert tracemalloc.get_traced_memory()[1] < 1 << 20  # no large allocation
    finally:
        tracemalloc.stop()


def test_huge_tensor_count_with_lifted_limits(packed):
    with pytest.raises(CorruptDataError):
        decode(craft(packed, n=2**32 - 1), limits=PackLimits(max_tensors=2**32 - 1))


@pytest.mark.parametrize("fields", [
    {"nbytes": 2**64 - 1},
    {"nbytes": 2**40},
    {"data_off": 2**64 - 64},
    {"data_off": 2**64 - 64, "nbytes": 128},
    {"data_off": 65},
    {"data_off": 0},
    {"name_off": 2**64 - 2},
    {"name_len": 2**31},
    {"dtype": 0},
    {"dtype": 200},
    {"ndim": 65},
    {"ndim": 255},
    {"ndim": 1},
])
def test_hostile_entries(packed, fields):
    with pytest.raises(CorruptDataError):
        decode(craft(packed, entry=0, **fields), verify=False,
               limits=PackLimits(max_name_len=2**32 - 1))


def test_overlapping_and_unordered_data_ranges(packed):
    e0 = dict(zip(ENTRY_FIELDS, ENTRY.unpack_from(packed, 64), strict=True))
    with pytest.raises(CorruptDataError):  # tensor 1 starts inside tensor 0
        decode(craft(packed, entry=1, data_off=e0["data_off"]), verify=False)


def test_duplicate_and_non_utf8_names(packed):
    e0 = dict(zip(ENTRY_FIELDS, ENTRY.unpack_from(packed, 64), strict=True))
    e1 = dict(zip(ENTRY_FIELDS, ENTRY.unpack_from(packed, 104), strict=True))
    with pytest.raises(CorruptDataError, match="twice"):
        decode(craft(packed, entry=1, name_off=e0["name_off"], name_len=e0["name_len"]))
    bad = bytearray(packed)
    bad[e1["name_off"]] = 0xFF
    with pytest.raises(CorruptDataError, match="UTF-8"):
        decode(resign(bad))


@pytest.mark.parametrize("meta", [
    b"\xff", b"\xa2\x61a", b"\xa0\x00", b"\x01", b"\x80",
    b"\xd8\x23\x63a+b",  # tag 35: a regex object
    b"\xc1\x1a\x00\x00\x00\x00",  # tag 1: a datetime
    b"\x81" * 2000 + b"\x00",
    b"\x5b" + (2**60).to_bytes(8, "big") + b"ab",
    b"\xbb" + (2**60).to_bytes(8, "big"),
])
def test_hostile_cbor_metadata(meta):
    buf = raw_pack({"x": np.ones(2)}, meta)
    with pytest.raises(CorruptDataError):
        decode(buf)


# ------------------------------------------------------------------ limits
@pytest.mark.parametrize("limits", [
    PackLimits(max_tensors=3), PackLimits(max_ndim=1), PackLimits(max_name_len=1),
    PackLimits(max_meta_len=10), PackLimits(max_total_len=128),
])
def test_limits_exceeded(packed, limits):
    with pytest.raises(LimitExceededError):
        decode(packed, limits=limits)


def test_limits_at_the_boundary_pass(packed):
    info = HDR.unpack_from(packed)
    decode(packed, limits=PackLimits(max_tensors=4, max_ndim=2, max_name_len=2,
                                     max_meta_len=info[8], max_total_len=len(packed)))


@pytest.mark.parametrize("kw", [{"max_ndim": 65}, {"max_tensors": 0}, {"max_name_len": -1},
                                {"max_meta_len": 1.5}, {"max_total_len": True}])
def test_bad_limits(kw):
    with pytest.raises(InvalidArgumentError):
        PackLimits(**kw)


# ---------------------------------------------------------------- segments
def test_segments_reference_the_arrays():
    t = {"a": np.arange(100, dtype=np.float32), "b": np.arange(7, dtype=np.int8)}
    segs = encode_segments(t, {"m": 1})
    assert b"".join(segs) == bytes(encode(t, {"m": 1}))
    assert np.shares_memory(np.frombuffer(segs[1], np.float32), t["a"])
    assert all(len(s) for s in segs)
    assert isinstance(decode(b"".join(segs)), TensorPack)


def test_native_entries_capacity_and_errors(packed):
    """cn_pack_entries: exact or spare room fills the table; too little, or NULL, is refused
    only after the head validates; a corrupt head reports its own error whatever the room."""
    buf = ffi.from_buffer(packed)
    info = ffi.new("cn_pack_info *")
    assert lib.cn_pack_open(buf, len(buf), ffi.NULL, info) == lib.CN_OK
    n = info.n_tensors
    assert n > 1
    exact = ffi.new("cn_pack_entry[]", n)
    spare = ffi.new("cn_pack_entry[]", n + 3)
    assert lib.cn_pack_entries(buf, len(buf), exact, n) == lib.CN_OK
    assert lib.cn_pack_entries(buf, len(buf), spare, n + 3) == lib.CN_OK
    for i in range(n):
        assert ffi.buffer(ffi.addressof(exact[i]))[:] == ffi.buffer(ffi.addressof(spare[i]))[:]
    small = ffi.new("cn_pack_entry[]", n - 1)
    assert lib.cn_pack_entries(buf, len(buf), small, n - 1) == lib.CN_E_NOSPACE
    assert lib.cn_pack_entries(buf, len(buf), ffi.NULL, 0) == lib.CN_E_INVAL
    assert lib.cn_pack_entries(buf, 10, exact, n) == lib.CN_E_TRUNCATED
    bad = bytearray(packed)
    bad[HDR.size] ^= 0x01  # first entry byte: covered by the head CRC
    bbuf = ffi.from_buffer(bad)
    for out, cap in ((exact, n), (small, n - 1), (ffi.NULL, 0)):
        assert lib.cn_pack_entries(bbuf, len(bbuf), out, cap) == lib.CN_E_CHECKSUM
    empty = bytes(encode({}))
    ebuf = ffi.from_buffer(empty)
    assert lib.cn_pack_entries(ebuf, len(ebuf), ffi.NULL, 0) == lib.CN_OK
    assert lib.cn_pack_entries(ebuf, len(ebuf), exact, n) == lib.CN_OK
