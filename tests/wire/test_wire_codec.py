"""Message <-> frame codec: payload shapes, batches, tensor payloads (fake and real pack)."""

from __future__ import annotations

import array
import random
import struct
import sys
import types
from collections.abc import Mapping

import cbor2
import numpy as np
import pytest
from wire_helpers import drain

from cellnet.errors import CorruptDataError, LocalProtocolError, RemoteProtocolError
from cellnet.message import Message
from cellnet.wire import (
    Frame,
    FrameDecoder,
    FrameFlags,
    FrameType,
    WireLimits,
    decode_batch,
    decode_message,
    decode_messages,
    encode_batch,
    encode_frame,
    encode_message,
)


def through_decoder(segments, **kw):
    dec = FrameDecoder(**kw)
    dec.receive_data(b"".join(segments))
    (frame,) = drain(dec)
    return frame


@pytest.mark.parametrize(
    "payload",
    [None, b"", b"abc" * 40, bytearray(b"\x00\x01"), memoryview(np.arange(5, dtype=np.float32)),
     array.array("d", [1.5, 2.5])],
)
def test_message_round_trip(payload):
    msg = Message.request("c", "t", payload, req_id=1, extra={"nested": [1, "x"]})
    frame = through_decoder(encode_message(msg))
    assert frame.type is FrameType.MESSAGE
    back = decode_message(frame)
    assert back == msg
    assert (back.payload is None) == (payload is None)


def test_none_and_empty_payload_flags():
    assert through_decoder(encode_message(Message())).flags is FrameFlags.NO_PAYLOAD
    assert through_decoder(encode_message(Message({}, b""))).flags is FrameFlags.NONE


def test_payload_is_sent_without_copy():
    body = bytearray(1 << 16)
    segs = encode_message(Message({"a": 1}, body))
    assert segs[1].obj is body


def test_decode_message_checks_frame():
    with pytest.raises(LocalProtocolError):
        decode_message(Frame(FrameType.PING))
    with pytest.raises(RemoteProtocolError):
        decode_message(Frame(FrameType.MESSAGE, {}, b"x", FrameFlags.NO_PAYLOAD))
    with pytest.raises(TypeError):
        encode_message({"not": "a message"})


def test_unserialisable_header_value():
    with pytest.raises(LocalProtocolError):
        encode_message(Message({"v": np.int64(3)}))
    with pytest.raises(LocalProtocolError):
        encode_batch([Message({"v": object()})])


def test_batch_of_1000_in_order_any_chunking():
    msgs = [Message.fire_and_forget("ch", "tp", i.to_bytes(4, "little") * (i % 7), seq=i)
            for i in range(1000)]
    msgs[5] = Message({"none": True})
    msgs[6] = Message({}, memoryview(b"view"))
    stream = b"".join(encode_batch(msgs))
    rnd = random.Random(5)
    dec = FrameDecoder(large_payload=1 << 12)
    frames, pos = [], 0
    while pos < len(stream):
        step = rnd.randint(1, 3000)
        dec.receive_data(stream[pos : pos + step])
        frames += drain(dec)
        pos += step
    (frame,) = frames
    assert frame.type is FrameType.BATCH
    assert frame.headers == {"count": 1000, "headers": msgs[0].headers}
    got = decode_batch(frame)
    assert got == msgs
    assert [m.get_header("seq") for m in got[7:]] == list(range(7, 1000))
    assert decode_messages(frame) == msgs


def test_batch_items_with_the_shared_headers_carry_only_their_payload():
    msgs = [Message.fire_and_forget("ch", "tp", b"%03d" % i) for i in range(300)]
    msgs[7] = Message.fire_and_forget("ch", "other", b"007")  # differs: its own headers
    segments = encode_batch(msgs)
    size = sum(len(s) for s in segments)
    assert size < 300 * (3 + 8) + 200  # each item: payload and a few bytes of framing
    got = decode_batch(through_decoder(segments))
    assert got == msgs
    got[0].headers["cellnet.hop_count"] = 5  # each message owns its headers
    assert "cellnet.hop_count" not in got[1].headers


@pytest.mark.parametrize(
    ("shared", "items"),
    [
        (None, [[None, 0, None]]),  # null headers but nothing shared
        (["not", "a map"], [[None, 0, None]]),
        ({1: "x"}, [[None, 0, None]]),
    ],
)
def test_malformed_batch_shared_headers(shared, items):
    frame = Frame(FrameType.BATCH, {"count": 1, "headers": shared}, cbor2.dumps(items))
    with pytest.raises(RemoteProtocolError):
        decode_batch(frame)


def test_encode_batch_rejects():
    with pytest.raises(LocalProtocolError):
        encode_batch([])
    with pytest.raises(LocalProtocolError):
        encode_batch([Message()] * 4, limits=WireLimits(max_batch_count=3))
    encode_batch([Message()] * 3, limits=WireLimits(max_batch_count=3))
    with pytest.raises(TypeError):
        encode_batch([b"raw"])
    with pytest.raises(LocalProtocolError, match="CBOR"):  # no plain equality, no CBOR form
        encode_batch([Message({"a": 1}), Message({"a": np.arange(3)})])


@pytest.mark.parametrize(
    ("count", "items"),
    [
        (1, {"not": "a list"}),
        (2, [[{}, 0, None]]),
        (1, [[{}, 0]]),
        (1, [[{1: 2}, 0, None]]),
        (1, [[[], 0, None]]),
        (1, [[{}, 1, None]]),
        (1, [[{}, 0, b"x"]]),
        (1, [[{}, 9, b"x"]]),
        (1, [[{}, True, b"x"]]),
        (1, [[{}, 1, "text"]]),
    ],
)
def test_malformed_batch_payload(count, items):
    frame = Frame(FrameType.BATCH, {"count": count}, cbor2.dumps(items))
    with pytest.raises(RemoteProtocolError):
        decode_batch(frame)


def test_batch_payload_must_be_exact_cbor():
    body = cbor2.dumps([[{}, 0, None]])
    with pytest.raises(RemoteProtocolError, match="trailing"):
        decode_batch(Frame(FrameType.BATCH, {"count": 1}, body + b"\x00"))
    with pytest.raises(RemoteProtocolError, match="malformed"):
        decode_batch(Frame(FrameType.BATCH, {"count": 1}, body[:-1]))
    with pytest.raises(LocalProtocolError):
        decode_batch(Frame(FrameType.MESSAGE))


# ------------------------------------------------------------------ tensors (fake pack)
class _FakePack(Mapping):
    def __init__(self, arrays, meta):
        self._arrays, self.meta = arrays, meta

    def __getitem__(self, key):
        return self._arrays[key]

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self):
        return len(self._arrays)


def _fake_encode_segments(tensors, meta=None):
    index = [[name, a.dtype.str, list(a.shape)] for name, a in tensors.items()]
    head = cbor2.dumps([meta, index])
    segs = [memoryview(struct.pack("<I", len(head)) + head)]
    segs += [memoryview(np.ascontiguousarray(a)).cast("B") for a in tensors.values()]
    return segs


def _fake_decode(buf, *, verify=True):
    view = memoryview(buf)
    try:
        (n,) = struct.unpack_from("<I", view)
        meta, index = cbor2.loads(view[4 : 4 + n])
    except Exception as exc:
        raise CorruptDataError(f"fake pack: {exc}") from exc
    off, arrays = 4 + n, {}
    for name, dt, shape in index:
        count = int(np.prod(shape))
        arr = np.frombuffer(buf, dtype=dt, count=count, offset=off).reshape(shape)
        arr.flags.writeable = False
        arrays[name] = arr
        off += arr.nbytes
    return _FakePack(arrays, meta)


@pytest.fixture
def fake_pack(monkeypatch):
    mod = types.ModuleType("cellnet.native.pack")
    mod.encode_segments = _fake_encode_segments
    mod.decode = _fake_decode
    monkeypatch.setitem(sys.modules, "cellnet.native.pack", mod)
    return mod


def _tensors():
    return {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.int16)}


def test_tensor_payload_flagged_and_zero_copy(fake_pack):
    msg = Message.request("task", "train", _tensors())
    segs = encode_message(msg)
    assert any(s.obj is msg.payload["w"] or getattr(s.obj, "base", None) is not None
               for s in segs[1:])
    frame = through_decoder(segs)
    assert frame.flags is FrameFlags.TENSOR_PAYLOAD
    back = decode_message(frame)
    assert back == msg
    raw = np.frombuffer(frame.payload, np.uint8)
    assert all(np.shares_memory(a, raw) for a in back.payload.values())


def test_tensor_meta_travels(fake_pack):
    pack = _FakePack(_tensors(), {"round": 3})
    back = decode_message(through_decoder(encode_message(Message({}, pack))))
    assert back.payload.meta == {"round": 3}


def test_tensors_in_batch(fake_pack, monkeypatch):
    starts = []

    def recording_decode(buf, *, verify=True):
        starts.append(np.frombuffer(buf, np.uint8).ctypes.data)
        return _fake_decode(buf, verify=verify)

    monkeypatch.setattr(fake_pack, "decode", recording_decode)
    msgs = [Message({"i": i}, _tensors() if i % 2 else b"x") for i in range(6)]
    got = decode_batch(through_decoder(encode_batch(msgs)))
    assert got == msgs
    assert len(starts) == 3 and all(a % 64 == 0 for a in starts)  # packs decoded aligned


def test_corrupt_tensor_payload_is_remote_error(fake_pack):
    frame = Frame(FrameType.MESSAGE, {}, b"\xff\xff", FrameFlags.TENSOR_PAYLOAD)
    with pytest.raises(RemoteProtocolError, match="tensor"):
        decode_message(frame)


# ------------------------------------------------------------------ tensors (real pack)
def test_real_pack_round_trip_zero_copy():
    pack = pytest.importorskip("cellnet.native.pack")
    tensors = {"w": np.random.default_rng(0).standard_normal((64, 33)).astype(np.float32),
               "n": np.arange(7, dtype=np.int64)}
    segs = encode_message(Message.request("task", "train", tensors))
    frame = through_decoder(segs)
    back = decode_message(frame, verify_tensors=True)
    raw = np.frombuffer(frame.payload, np.uint8)
    for name, arr in tensors.items():
        assert np.array_equal(back.payload[name], arr)
        assert np.shares_memory(back.payload[name], raw)
    assert decode_batch(through_decoder(encode_batch([Message({}, tensors)])))[0] == Message(
        {}, tensors
    )
    bad = bytearray(b"".join(pack.encode_segments(tensors)))
    bad[:8] = b"\x00" * 8
    with pytest.raises(RemoteProtocolError):
        decode_message(Frame(FrameType.MESSAGE, {}, bytes(bad), FrameFlags.TENSOR_PAYLOAD))


def test_encode_frame_header_with_enum_values():
    seg = encode_frame(FrameType.MESSAGE, {"t": FrameType.PING})
    assert through_decoder(seg).headers == {"t": 4}
