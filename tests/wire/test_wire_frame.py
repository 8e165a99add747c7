"""Frame encoding: layout, segments without copies, validation of what we send."""

from __future__ import annotations

import struct

import cbor2
import pytest

from cellnet.errors import LocalProtocolError
from cellnet.native import crc32c
from cellnet.wire import (
    MAGIC,
    PREFIX_SIZE,
    VERSION,
    Frame,
    FrameDecoder,
    FrameFlags,
    FrameType,
    WireLimits,
    encode_frame,
)
from cellnet.wire.frame import PREFIX, aligned_buffer, encode_headers


def test_prefix_layout_and_checksums():
    headers = {"a": 1, "b": "two"}
    payload = b"payload bytes"
    segs = encode_frame(FrameType.PING, headers, payload, flags=FrameFlags.NONE)
    data = b"".join(segs)
    hdr = cbor2.dumps(headers)
    magic, ver, ftype, flags, rsv, hlen, hcrc, plen, pcrc, crc = PREFIX.unpack_from(data)
    assert PREFIX_SIZE == 32
    assert (magic, ver, ftype, flags, rsv) == (MAGIC, VERSION, FrameType.PING, 0, 0)
    assert (hlen, plen) == (len(hdr), len(payload))
    assert hcrc == crc32c(hdr)
    assert pcrc == crc32c(payload)
    assert crc == crc32c(data[:28])
    assert data[32:] == hdr + payload


def test_empty_headers_take_no_bytes():
    data = b"".join(encode_frame(FrameType.PING))
    assert len(data) == PREFIX_SIZE
    assert struct.unpack_from("<I", data, 8)[0] == 0


def test_payload_segments_are_not_copied():
    big = bytearray(b"z" * 100_000)
    parts = [memoryview(big), b"tail"]
    segs = encode_frame(FrameType.MESSAGE, {"k": "v"}, parts)
    assert len(segs) == 3
    assert segs[1].obj is big  # the caller's buffer itself, not a copy
    assert segs[2].obj == b"tail"
    assert b"".join(segs).endswith(bytes(big) + b"tail")


def test_payload_crc_spans_segments():
    one = b"".join(encode_frame(FrameType.MESSAGE, None, b"abcdef"))
    split = b"".join(encode_frame(FrameType.MESSAGE, None, [b"abc", b"", b"def"]))
    assert one == split


def test_frame_encode_matches_encode_frame():
    f = Frame(FrameType.GOAWAY, {"reason": "bye"}, b"x")
    assert b"".join(f.encode()) == b"".join(encode_frame(FrameType.GOAWAY, {"reason": "bye"}, b"x"))


def test_frame_coerces_int_type_and_flags():
    f = Frame(2, {}, b"", 1)
    assert f.type is FrameType.MESSAGE
    assert f.flags is FrameFlags.TENSOR_PAYLOAD


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": 99},
        {"type": "MESSAGE"},
        {"type": FrameType.MESSAGE, "flags": 0x80},
        {"type": FrameType.MESSAGE, "flags": True},
        {"type": FrameType.MESSAGE, "headers": {1: "x"}},
        {"type": FrameType.MESSAGE, "headers": [("a", 1)]},
        {"type": FrameType.MESSAGE, "payload": "text"},
    ],
)
def test_invalid_frame_rejected(kwargs):
    with pytest.raises(LocalProtocolError):
        Frame(**kwargs)


def test_unserialisable_headers_rejected():
    with pytest.raises(LocalProtocolError, match="CBOR"):
        encode_frame(FrameType.MESSAGE, {"obj": object()})
    with pytest.raises(LocalProtocolError):
        encode_headers({("tuple",): 1})


def test_noncontiguous_payload_rejected():
    import numpy as np

    arr = np.arange(20, dtype=np.uint8)[::2]
    with pytest.raises(LocalProtocolError, match="contiguous"):
        encode_frame(FrameType.MESSAGE, None, arr)


def test_encode_checks_peer_limits():
    limits = WireLimits(max_header_bytes=8, max_payload_bytes=10)
    encode_frame(FrameType.MESSAGE, {"a": 1}, b"x" * 10, limits=limits)
    with pytest.raises(LocalProtocolError, match="payload"):
        encode_frame(FrameType.MESSAGE, {"a": 1}, b"x" * 11, limits=limits)
    with pytest.raises(LocalProtocolError, match="headers"):
        encode_frame(FrameType.MESSAGE, {"abcdefgh": 1}, b"", limits=limits)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"max_header_bytes": 0}, ValueError),
        ({"max_payload_bytes": -1}, ValueError),
        ({"max_batch_count": 2**40}, ValueError),
        ({"max_batch_count": 1.5}, TypeError),
        ({"max_header_bytes": True}, TypeError),
    ],
)
def test_wire_limits_validated(kwargs, exc):
    with pytest.raises(exc):
        WireLimits(**kwargs)


def test_aligned_buffer():
    import numpy as np

    for n in (1, 63, 64, 1000):
        buf = aligned_buffer(n)
        assert buf.nbytes == n and not buf.readonly
        assert np.frombuffer(buf, np.uint8).ctypes.data % 64 == 0


def test_round_trip_every_type():
    dec = FrameDecoder()
    sent = [Frame(t, {"t": int(t), "count": 3}, bytes([int(t)]) * int(t)) for t in FrameType]
    for f in sent:
        dec.receive_data(b"".join(f.encode()))
    got = [dec.next_frame() for _ in sent]
    assert got == sent
