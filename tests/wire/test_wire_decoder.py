"""Incremental decoding: any chunking, truncation, corruption, limits, EOF, large payloads."""

from __future__ import annotations

import itertools
import tracemalloc

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_helpers import drain, make_prefix

from cellnet.errors import (
    FrameChecksumError,
    FrameFormatError,
    FrameTooLargeError,
    LocalProtocolError,
    RemoteProtocolError,
)
from cellnet.native import crc32c
from cellnet.wire import (
    CLOSED,
    NEED_DATA,
    PREFIX_SIZE,
    Frame,
    FrameDecoder,
    FrameFlags,
    FrameType,
    WireLimits,
    encode_frame,
)
from cellnet.wire.frame import encode_headers


def frame_bytes(ftype=FrameType.MESSAGE, headers=None, payload=None, flags=0) -> bytes:
    return b"".join(encode_frame(ftype, headers, payload, flags=flags))


SAMPLE = [
    Frame(FrameType.HELLO, {"fqcn": "site-1", "version": 1}),
    Frame(FrameType.MESSAGE, {"cellnet.topic": "t", "n": [1, 2.5, None]}, b"abc" * 50),
    Frame(FrameType.PING),
    Frame(FrameType.MESSAGE, {}, bytes(range(256)) * 3, FrameFlags.TENSOR_PAYLOAD),
    Frame(FrameType.STREAM_DATA, {"sid": 7, "seq": 0}, b"\x00" * 1000),
]
SAMPLE_BYTES = [b"".join(f.encode()) for f in SAMPLE]


def test_one_byte_at_a_time_and_all_in_one_chunk():
    stream = b"".join(SAMPLE_BYTES)
    whole = FrameDecoder()
    whole.receive_data(stream)
    assert drain(whole) == SAMPLE
    single = FrameDecoder(large_payload=100)  # also drive the large-payload path
    got = []
    for i in range(len(stream)):
        single.receive_data(stream[i : i + 1])
        got += drain(single)
    assert got == SAMPLE
    single.receive_data(b"")
    assert single.next_frame() is CLOSED
    assert single.next_frame() is CLOSED


frame_st = st.builds(
    Frame,
    st.sampled_from([t for t in FrameType if t is not FrameType.BATCH]),
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=20), st.binary(max_size=20),
                  st.none(), st.lists(st.booleans(), max_size=3)),
        max_size=4,
    ),
    st.binary(max_size=300),
)


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(frame_st, min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    large=st.sampled_from([1, 16, 200, 1 << 20]),
    memview=st.booleans(),
)
def test_any_split_points(frames, cuts, large, memview):
    stream = b"".join(b"".join(f.encode()) for f in frames)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    dec = FrameDecoder(large_payload=large)
    got = []
    for a, b in itertools.pairwise(points):
        chunk = stream[a:b]
        dec.receive_data(memoryview(chunk) if memview else chunk)
        got += drain(dec)
    dec.receive_data(b"")
    assert dec.next_frame() is CLOSED
    assert got == frames
    assert dec.frames_received == len(frames)
    assert dec.buffered_bytes == 0


@pytest.mark.parametrize("large", [1 << 20, 8])
def test_every_truncation_raises_at_eof(large):
    data = frame_bytes(FrameType.MESSAGE, {"k": "v" * 10}, b"p" * 40)
    for n in range(1, len(data)):
        dec = FrameDecoder(large_payload=large)
        dec.receive_data(data[:n])
        assert dec.next_frame() is NEED_DATA
        dec.receive_data(b"")
        with pytest.raises(RemoteProtocolError, match="closed"):
            dec.next_frame()
        with pytest.raises(RemoteProtocolError):  # the error is sticky
            dec.next_frame()


def test_eof_at_boundary_is_clean():
    dec = FrameDecoder()
    dec.receive_data(b"")
    assert dec.next_frame() is CLOSED
    with pytest.raises(LocalProtocolError):
        dec.receive_data(b"more")


@pytest.mark.parametrize("large", [1 << 20, 8])
def test_every_single_byte_corruption_detected(large):
    data = frame_bytes(FrameType.MESSAGE, {"k": "v", "n": 3}, b"payload-bytes" * 3)
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            dec = FrameDecoder(large_payload=large)
            dec.receive_data(bytes(bad))
            dec.receive_data(b"")
            with pytest.raises(RemoteProtocolError):
                drain(dec)


@pytest.mark.parametrize(
    ("region", "exc"),
    [(slice(8, 9), FrameChecksumError), (slice(40, 41), FrameChecksumError),
     (slice(-1, None), FrameChecksumError)],
)
def test_corruption_reports_checksum_error(region, exc):
    data = bytearray(frame_bytes(FrameType.MESSAGE, {"key": "value"}, b"0123456789"))
    data[region] = bytes([data[region][0] ^ 0x10])
    dec = FrameDecoder()
    dec.receive_data(bytes(data))
    with pytest.raises(exc):
        dec.next_frame()


def test_bad_magic_version_type_flags_reserved():
    cases = [
        make_prefix(magic=b"HT"),
        make_prefix(version=2),
        make_prefix(version=0),
        make_prefix(ftype=0),
        make_prefix(ftype=200),
        make_prefix(flags=0x40),
        make_prefix(reserved=1),
    ]
    for prefix in cases:
        dec = FrameDecoder()
        dec.receive_data(prefix)
        with pytest.raises(FrameFormatError):
            dec.next_frame()


def _over_limit_raises_after_prefix_only(prefix, limits):
    dec = FrameDecoder(limits)
    dec.receive_data(prefix)  # nothing but the 32-byte prefix
    with pytest.raises(FrameTooLargeError):
        dec.next_frame()


def test_header_limit_plus_one():
    hdr = encode_headers({"k": "x" * 50})
    data = frame_bytes(FrameType.MESSAGE, {"k": "x" * 50})
    ok = FrameDecoder(WireLimits(max_header_bytes=len(hdr)))
    ok.receive_data(data)
    assert ok.next_frame().headers == {"k": "x" * 50}
    limits = WireLimits(max_header_bytes=len(hdr) - 1)
    _over_limit_raises_after_prefix_only(data[:PREFIX_SIZE], limits)


def test_payload_limit_plus_one():
    data = frame_bytes(FrameType.MESSAGE, None, b"x" * 100)
    ok = FrameDecoder(WireLimits(max_payload_bytes=100))
    ok.receive_data(data)
    assert ok.next_frame().payload == b"x" * 100
    _over_limit_raises_after_prefix_only(data[:PREFIX_SIZE], WireLimits(max_payload_bytes=99))


def test_huge_declared_payload_rejected_without_allocation():
    limit = 1 << 40
    prefix = make_prefix(plen=limit + 1)
    tracemalloc.start()
    try:
        _over_limit_raises_after_prefix_only(prefix, WireLimits(max_payload_bytes=limit))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_batch_count_limit_plus_one():
    headers = {"count": 5}
    ok = FrameDecoder(WireLimits(max_batch_count=5))
    ok.receive_data(frame_bytes(FrameType.BATCH, headers, b"\x85"))
    assert ok.next_frame().headers == headers
    hdr = cbor2.dumps(headers)
    body = b"\x00" * (1 << 16)
    # headers complete, payload not sent yet: the count is refused before it is received
    partial = make_prefix(FrameType.BATCH, hlen=len(hdr), hcrc=crc32c(hdr), plen=len(body),
                          pcrc=crc32c(body)) + hdr
    dec = FrameDecoder(WireLimits(max_batch_count=4))
    dec.receive_data(partial)
    with pytest.raises(FrameTooLargeError):
        dec.next_frame()


@pytest.mark.parametrize("count", [0, -1, "3", None, 2.0])
def test_batch_count_must_be_positive_int(count):
    dec = FrameDecoder()
    dec.receive_data(frame_bytes(FrameType.BATCH, {"count": count}, b"\x80"))
    with pytest.raises(RemoteProtocolError, match="count"):
        dec.next_frame()


@pytest.mark.parametrize(
    "hdr",
    [b"\xff\xff", cbor2.dumps([1, 2]), cbor2.dumps({1: "x"}), cbor2.dumps({"a": 1}) + b"\x00",
     b"\xa1\x61a"],
)
def test_malformed_or_mistyped_headers(hdr):
    prefix = make_prefix(hlen=len(hdr), hcrc=crc32c(hdr))
    dec = FrameDecoder()
    dec.receive_data(prefix + hdr)
    with pytest.raises(RemoteProtocolError) as info:
        dec.next_frame()
    assert not isinstance(info.value, FrameChecksumError)


def test_large_payload_goes_to_aligned_own_buffer():
    payload = bytes(range(256)) * 1024
    data = frame_bytes(FrameType.MESSAGE, {"a": 1}, payload)
    dec = FrameDecoder(large_payload=1024)
    for i in range(0, len(data), 4096):
        dec.receive_data(data[i : i + 4096])
        if i + 4096 < len(data):
            assert dec.next_frame() is NEED_DATA
    f = dec.next_frame()
    assert f.payload == payload
    assert isinstance(f.payload, memoryview) and not f.payload.readonly
    assert np.frombuffer(f.payload, np.uint8).ctypes.data % 64 == 0
    assert dec.buffered_bytes == 0


def test_tensor_flag_always_gets_aligned_buffer():
    dec = FrameDecoder()
    dec.receive_data(frame_bytes(FrameType.MESSAGE, None, b"12345678", flags=1))
    f = dec.next_frame()
    assert np.frombuffer(f.payload, np.uint8).ctypes.data % 64 == 0


def test_get_buffer_and_buffer_updated():
    payload = np.random.default_rng(1).integers(0, 255, 300_000, dtype=np.uint8).tobytes()
    data = frame_bytes(FrameType.STREAM_DATA, {"sid": 1}, payload)
    dec = FrameDecoder()
    assert dec.get_buffer() is None
    dec.receive_data(data[:1000])
    assert dec.next_frame() is NEED_DATA
    done = 1000
    while (view := dec.get_buffer()) is not None:
        n = min(len(view), 70_000)
        view[:n] = data[done : done + n]  # what a recv_into would do
        dec.buffer_updated(n)
        done += n
        if dec.next_frame() is not NEED_DATA:
            break
    else:  # pragma: no cover
        pytest.fail("frame never completed")
    assert done == len(data)
    with pytest.raises(LocalProtocolError):
        dec.buffer_updated(1)


def test_buffer_updated_rejects_overrun_and_corruption_via_get_buffer():
    payload = b"q" * 100_000
    data = frame_bytes(FrameType.MESSAGE, None, payload)
    dec = FrameDecoder()
    dec.receive_data(data[:PREFIX_SIZE])
    dec.next_frame()
    view = dec.get_buffer()
    with pytest.raises(LocalProtocolError):
        dec.buffer_updated(len(view) + 1)
    view[:] = b"r" * len(view)
    dec.buffer_updated(len(view))
    with pytest.raises(FrameChecksumError):
        dec.next_frame()


def test_allocate_payload_hook_receives_into_callers_buffer():
    target = bytearray(200_000)
    calls = []

    def alloc(ftype, flags, headers, n):
        calls.append((ftype, headers["off"], n))
        return memoryview(target)[headers["off"] : headers["off"] + n]

    dec = FrameDecoder(allocate_payload=alloc)
    chunk = b"c" * 100_000
    for off in (0, 100_000):
        dec.receive_data(frame_bytes(FrameType.STREAM_DATA, {"off": off}, chunk))
        f = dec.next_frame()
        assert f.payload.obj is target
    assert calls == [(FrameType.STREAM_DATA, 0, 100_000), (FrameType.STREAM_DATA, 100_000, 100_000)]
    assert target == b"c" * 200_000


@pytest.mark.parametrize("bad", [b"readonly" * 20_000, bytearray(10), "text"])
def test_allocate_payload_hook_result_checked(bad):
    dec = FrameDecoder(allocate_payload=lambda *a: bad)
    dec.receive_data(frame_bytes(FrameType.MESSAGE, None, b"x" * 100_000))
    with pytest.raises(LocalProtocolError):
        dec.next_frame()


def test_buffer_stays_bounded_while_draining():
    frame = frame_bytes(FrameType.MESSAGE, {"i": 1}, b"m" * 100)
    stream = frame * 2000
    dec = FrameDecoder()
    peak = 0
    for i in range(0, len(stream), 5000):
        dec.receive_data(stream[i : i + 5000])
        drain(dec)
        peak = max(peak, len(dec._buf))
    assert dec.frames_received == 2000
    assert peak < 5000 + 2 * len(frame)


def test_constructor_validation():
    with pytest.raises(TypeError):
        FrameDecoder({"max_header_bytes": 1})
    with pytest.raises(ValueError):
        FrameDecoder(large_payload=0)
    with pytest.raises(TypeError):
        FrameDecoder(allocate_payload=42)


def test_data_after_error_is_ignored():
    dec = FrameDecoder()
    dec.receive_data(make_prefix(magic=b"XX"))
    with pytest.raises(FrameFormatError):
        dec.next_frame()
    dec.receive_data(frame_bytes(FrameType.PING))
    with pytest.raises(FrameFormatError):
        dec.next_frame()
