"""CRC32C: known vectors, every dispatch path against the portable one, copy+crc."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellnet.errors import BufferTooSmallError, InvalidArgumentError
from cellnet.native import copy_crc32c, crc32c, crc32c_impl, forced_portable, lib

DATA = os.urandom(1 << 18)

# Masks selecting each x86 path the CPU supports (plus portable everywhere).
_ALL = lib.cn_cpu_features()
_MASKS = {"portable": 0, "sse4.2": lib.CN_CPU_SSE42,
          "pclmul": lib.CN_CPU_SSE42 | lib.CN_CPU_PCLMUL, "best": 0xFFFFFFFF}


@pytest.fixture(params=sorted(_MASKS))
def impl(request):
    """Run the test once per implementation (restoring the mask afterwards)."""
    prev = lib.cn_cpu_set_mask(_MASKS[request.param])
    try:
        yield crc32c_impl()
    finally:
        lib.cn_cpu_set_mask(prev)


def portable(data: bytes, crc: int = 0) -> int:
    return lib.cn_crc32c_portable(crc, data, len(data))


@pytest.mark.parametrize(("data", "want"), [
    (b"", 0),
    (b"123456789", 0xE3069283),
    (b"a", 0xC1D04330),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
])
def test_known_vectors(impl, data, want):
    assert crc32c(data) == want
    assert portable(data) == want


def test_impl_names():
    with forced_portable():
        assert crc32c_impl() == "portable"
    if _ALL & lib.CN_CPU_SSE42:
        assert crc32c_impl() != "portable"


@settings(max_examples=150, deadline=None)
@given(off=st.integers(0, 63), n=st.one_of(st.integers(0, 1100), st.integers(0, 70000)),
       seed=st.integers(0, 2**32 - 1))
def test_every_path_matches_portable(off, n, seed):
    chunk = DATA[off : off + n]
    want = portable(chunk, seed)
    for mask in _MASKS.values():
        prev = lib.cn_cpu_set_mask(mask)
        try:
            assert crc32c(chunk, seed) == want, crc32c_impl()
        finally:
            lib.cn_cpu_set_mask(prev)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 5000), n=st.integers(0, 5000))
def test_continuation(cut, n):
    data = DATA[:n]
    cut = min(cut, n)
    assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)


def test_accepts_any_buffer(impl):
    arr = np.frombuffer(DATA[:4096], dtype=np.float32)
    assert crc32c(arr) == crc32c(memoryview(DATA[:4096])) == portable(DATA[:4096])


def test_detects_single_bit_flips():
    base = bytearray(DATA[:1000])
    ref = crc32c(base)
    for bit in range(0, 8000, 97):
        base[bit // 8] ^= 1 << (bit % 8)
        assert crc32c(base) != ref
        base[bit // 8] ^= 1 << (bit % 8)


@settings(max_examples=80, deadline=None)
@given(soff=st.integers(0, 63), doff=st.integers(0, 63),
       n=st.one_of(st.integers(0, 600), st.integers(0, 100_000)), seed=st.integers(0, 2**32 - 1))
def test_copy_crc32c(soff, doff, n, seed):
    src = DATA[soff : soff + n]
    for mask in (0, 0xFFFFFFFF):
        prev = lib.cn_cpu_set_mask(mask)
        try:
            dst = bytearray(b"\xee" * (len(src) + 128))
            got = copy_crc32c(memoryview(dst)[doff:], src, seed)
        finally:
            lib.cn_cpu_set_mask(prev)
        assert got == portable(src, seed)
        assert dst[doff : doff + len(src)] == src
        assert dst[:doff] == b"\xee" * doff  # nothing written outside the target range
        assert dst[doff + len(src) :] == b"\xee" * (128 - doff)


def test_copy_crc32c_large_uses_streaming_path():
    src = np.frombuffer(os.urandom(5 << 20), dtype=np.uint8)
    for doff in (0, 1, 33):
        dst = np.zeros(src.nbytes + 64, dtype=np.uint8)
        got = copy_crc32c(dst[doff:], src[doff:], 7)
        assert got == portable(src[doff:].tobytes(), 7)
        assert np.array_equal(dst[doff : doff + src.nbytes - doff], src[doff:])
        assert not dst[src.nbytes :].any()


def test_copy_crc32c_bad_arguments():
    with pytest.raises(BufferTooSmallError):
        copy_crc32c(bytearray(3), b"abcd")
    with pytest.raises(TypeError):
        copy_crc32c(b"read-only", b"abc")
    buf = bytearray(b"abcdefgh")
    view = memoryview(buf)
    with pytest.raises(InvalidArgumentError):  # overlapping source and destination
        copy_crc32c(view[2:], view[:4])
    assert buf == b"abcdefgh"
