"""The native frame helpers: cn_frame_seal / cn_frame_verify / cn_cbor_check against Python."""

from __future__ import annotations

import io

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellnet.native import crc32c, ffi, lib
from cellnet.wire import PREFIX_SIZE, FrameDecoder, FrameType, encode_frame
from cellnet.wire._cbor import loads_exact
from cellnet.wire.frame import PREFIX

cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=12,
)


def _exact_by_cbor2(data: bytes) -> bool:
    fp = io.BytesIO(data)
    try:
        cbor2.CBORDecoder(fp).decode()
    except Exception:
        return False
    return fp.tell() == len(data)


def test_prefix_size_agrees():
    assert lib.CN_FRAME_PREFIX_SIZE == PREFIX_SIZE


@settings(max_examples=150, deadline=None)
@given(cbor_values)
def test_cbor_check_accepts_every_item_and_rejects_every_cut_and_extension(value):
    data = cbor2.dumps(value)
    assert lib.cn_cbor_check(data, len(data)) == 0
    for n in range(len(data)):
        assert lib.cn_cbor_check(data[:n], n) != 0
    extended = data + b"\x00"
    assert lib.cn_cbor_check(extended, len(extended)) != 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=24))
def test_cbor_check_never_accepts_what_cbor2_reads_differently(data):
    if lib.cn_cbor_check(data, len(data)) == 0:
        # accepted: cbor2 must either consume exactly these bytes or fail to decode them
        fp = io.BytesIO(data)
        try:
            cbor2.CBORDecoder(fp).decode()
        except Exception:
            return
        assert fp.tell() == len(data)


@pytest.mark.parametrize(
    "data",
    [b"\x9f\xff", b"\x5f\x41a\xff", b"\xbf\x61k\x01\xff", b"\xc1\x01", b"\x82\x01\x9f\xff"],
)
def test_cbor_check_indefinite_and_tags(data):
    assert lib.cn_cbor_check(data, len(data)) == 0
    assert _exact_by_cbor2(data)


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"\x9f\xc1\xff", b"\xbf\x61k\xff", b"\x5f\x61a\xff", b"\x1c", b"\xf8\x01",
     b"\x5f\x5f\xff\xff", b"\x9b" + b"\xff" * 8, b"\x81" * 65 + b"\x00"],
)
def test_cbor_check_rejects_malformed(data):
    assert lib.cn_cbor_check(data, len(data)) != 0


def test_deep_nesting_falls_back_to_the_stream_decoder():
    data = b"\x81" * 80 + b"\x00"
    assert lib.cn_cbor_check(data, len(data)) == lib.CN_E_LIMIT
    value = loads_exact(data, "deep")  # still decoded, by the exact stream path
    for _ in range(80):
        value = value[0]
    assert value == 0


def test_seal_matches_the_documented_layout():
    head = bytearray(PREFIX_SIZE) + cbor2.dumps({"k": 1})
    assert lib.cn_frame_seal(ffi.from_buffer(head), len(head), 2, 1, 5, b"world", 5,
                             crc32c(b"hello")) == 0
    magic, ver, ftype, flags, rsv, hlen, hcrc, plen, pcrc, crc = PREFIX.unpack_from(head)
    assert (magic, ver, ftype, flags, rsv, plen) == (b"\xce\x11", 1, 2, 1, 0, 5)
    assert hlen == len(head) - PREFIX_SIZE and hcrc == crc32c(bytes(head[PREFIX_SIZE:]))
    assert pcrc == crc32c(b"helloworld") and crc == crc32c(bytes(head[:28]))
    assert lib.cn_frame_seal(ffi.from_buffer(head), 31, 2, 0, 0, ffi.NULL, 0, 0) == lib.CN_E_INVAL
    assert lib.cn_frame_seal(ffi.from_buffer(head), len(head), 256, 0, 0, ffi.NULL, 0, 0) != 0


def test_verify_catches_every_flipped_bit_and_every_cut():
    data = b"".join(encode_frame(FrameType.MESSAGE, {"a": "b"}, b"xyz"))
    assert lib.cn_frame_verify(data, 0, len(data)) == 0
    padded = b"junk" + data
    assert lib.cn_frame_verify(padded, 4, len(data)) == 0
    for i in range(len(data) * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        assert lib.cn_frame_verify(bytes(bad), 0, len(bad)) != 0
    for n in range(len(data)):
        assert lib.cn_frame_verify(data[:n], 0, n) != 0


def test_verify_rejects_headers_that_are_not_one_cbor_item():
    from wire_helpers import make_prefix

    hdr = cbor2.dumps({"a": 1}) + b"\x00"
    data = make_prefix(hlen=len(hdr), hcrc=crc32c(hdr)) + hdr
    assert lib.cn_frame_verify(data, 0, len(data)) == lib.CN_E_FORMAT
    dec = FrameDecoder()
    dec.receive_data(data)
    with pytest.raises(Exception, match="trailing"):  # the step-by-step path names it
        dec.next_frame()


def test_decoder_adopts_bytes_and_still_handles_any_chunking():
    frames = [b"".join(encode_frame(FrameType.MESSAGE, {"i": i}, bytes([i]) * i))
              for i in range(40)]
    stream = b"".join(frames)
    for step in (1, 7, 100, 5000, len(stream)):
        dec = FrameDecoder()
        got = []
        for pos in range(0, len(stream), step):
            dec.receive_data(stream[pos : pos + step])
            while (f := dec.next_frame()) is not None and hasattr(f, "headers"):
                got.append(f)
        assert [f.headers["i"] for f in got] == list(range(40))
        assert [f.payload for f in got] == [bytes([i]) * i for i in range(40)]
