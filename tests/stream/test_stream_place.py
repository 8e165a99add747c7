"""Zero-copy receive: chunks decoded straight into the sink (the decoder's allocate hook),
one CRC per chunk on the wire, corrupt chunk payloads failing only their stream, BufferPool."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_helpers import payload

from cellnet.errors import FrameChecksumError
from cellnet.native import crc32c
from cellnet.stream import (
    BufferSink,
    StreamCompleted,
    StreamCorruptError,
    StreamFailed,
    StreamMux,
)
from cellnet.stream.pool import BufferPool
from cellnet.stream.relay import StreamRelay
from cellnet.stream.sinks import same_memory
from cellnet.wire import NEED_DATA, FrameDecoder, FrameType, encode_frame


def _wire(a: StreamMux, b: StreamMux, *, corrupt_first_chunk: bool = False, large: int = 1024):
    """Run two muxes over real frame encoding/decoding; b's decoder uses b's allocate hook."""
    dec_b = FrameDecoder(allocate_payload=b.allocate_payload, large_payload=large)
    dec_a = FrameDecoder()
    events, corrupted = [], []
    for _ in range(100_000):
        progressed = False
        f = a.next_frame()
        if f is not None:
            progressed = True
            data = b"".join(bytes(s) for s in f.encode())
            if corrupt_first_chunk and f.type is FrameType.STREAM_DATA and not corrupted:
                corrupted.append(f)
                data = data[:-1] + bytes([data[-1] ^ 0xFF])  # a payload byte, not the prefix
            dec_b.receive_data(data)
            while (frame := dec_b.next_frame()) is not NEED_DATA:
                events.extend(b.receive(frame))
        f = b.next_frame()
        if f is not None:
            progressed = True
            dec_a.receive_data(b"".join(bytes(s) for s in f.encode()))
            while (frame := dec_a.next_frame()) is not NEED_DATA:
                a.receive(frame)
        if not progressed:
            break
    return events + b.poll_events()


def test_chunks_are_decoded_straight_into_the_sink(monkeypatch):
    writes, placed = [], []
    real_checked = BufferSink.write_checked

    def spy_write(self, offset, data):  # the copying path must not be taken
        writes.append(offset)
        return BufferSink.__dict__["_orig_write"](self, offset, data)

    def spy_checked(self, offset, data, crc):
        placed.append(same_memory(self._buf[offset : offset + data.nbytes], data))
        real_checked(self, offset, data, crc)

    monkeypatch.setattr(BufferSink, "_orig_write", BufferSink.write, raising=False)
    monkeypatch.setattr(BufferSink, "write", spy_write)
    monkeypatch.setattr(BufferSink, "write_checked", spy_checked)
    a = StreamMux(initiator=True, chunk_size=4096, window_chunks=2)
    b = StreamMux(initiator=False, chunk_size=4096, window_chunks=2)
    data = payload(50_000, 3)
    a.send(data)
    events = _wire(a, b, large=512)  # every chunk, the 848-byte last one too, is "large"
    done = [e for e in events if isinstance(e, StreamCompleted)]
    assert len(done) == 1 and bytes(done[0].result) == data.tobytes()
    assert writes == [] and len(placed) == 13 and all(placed)


def test_small_chunks_below_the_decoder_threshold_are_copied_and_checked():
    a = StreamMux(initiator=True, chunk_size=100, window_chunks=3)
    b = StreamMux(initiator=False, chunk_size=100, window_chunks=3)
    data = payload(1234, 4)
    a.send(data)
    events = _wire(a, b, large=1 << 20)
    done = [e for e in events if isinstance(e, StreamCompleted)]
    assert bytes(done[0].result) == data.tobytes()


def test_a_corrupt_chunk_payload_fails_only_its_stream():
    a = StreamMux(initiator=True, chunk_size=4096, window_chunks=2)
    b = StreamMux(initiator=False, chunk_size=4096, window_chunks=2)
    bad, good = payload(20_000, 5), payload(20_000, 6)
    a.send(bad)
    a.send(good)
    events = _wire(a, b, corrupt_first_chunk=True)
    failed = [e for e in events if isinstance(e, StreamFailed)]
    done = [e for e in events if isinstance(e, StreamCompleted)]
    assert len(failed) == 1 and isinstance(failed[0].error, StreamCorruptError)
    assert len(done) == 1 and bytes(done[0].result) == good.tobytes()
    assert b.statistics()["incoming"] == 0


def test_decoder_still_refuses_a_corrupt_payload_of_other_frames():
    data = b"".join(bytes(s) for s in encode_frame(FrameType.MESSAGE, {"a": 1}, b"x" * 5000))
    dec = FrameDecoder(large_payload=1024)
    dec.receive_data(data[:-1] + b"y")
    with pytest.raises(FrameChecksumError):
        dec.next_frame()


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.integers(0, 3000))
def test_encode_with_a_known_crc_is_the_same_frame(body, cut):
    crc = crc32c(body)
    segs = [body[:cut], body[cut:]]
    plain = b"".join(bytes(s) for s in encode_frame(FrameType.STREAM_DATA, {"sid": 1}, segs))
    known = b"".join(bytes(s) for s in encode_frame(FrameType.STREAM_DATA, {"sid": 1}, segs,
                                                   payload_crc=crc))
    assert plain == known
    dec = FrameDecoder(large_payload=1)
    dec.receive_data(known)
    frame = dec.next_frame()
    assert bytes(frame.payload) == body and frame.payload_crc == crc


def test_relay_passes_the_checked_crc_on_without_recomputing(monkeypatch):
    calls = []
    import cellnet.stream.relay as relay_mod

    monkeypatch.setattr(relay_mod, "crc32c", lambda d, c=0: calls.append(1) or crc32c(d, c))
    r = StreamRelay(StreamMux(initiator=False), 1, 2, window_chunks=2, down_window_chunks=2,
                    max_size=1 << 20, max_chunk=1 << 20)
    view = memoryview(b"abcdef")
    r.write_checked(0, view, 123)
    assert calls == [] and r.pending == 6 and r._queue[0] == (0, 123, view)
    assert r.write(6, memoryview(b"gh")) == crc32c(b"gh") and calls == [1]


def test_pool_reuses_only_released_buffers_of_about_the_size():
    pool = BufferPool(max_buffers=2, min_bytes=1000)
    a = pool.acquire(5000)
    addr = np.frombuffer(a, np.uint8).ctypes.data
    assert addr % 64 == 0 and a.nbytes == 5000 and not a.readonly
    b = pool.acquire(5000)
    assert pool.reused == 0
    view = np.frombuffer(a, np.float32)  # a user array over the buffer keeps it busy
    del a
    c = pool.acquire(5000)
    assert pool.reused == 0
    del view
    d = pool.acquire(4900)
    assert pool.reused == 1 and np.frombuffer(d, np.uint8).ctypes.data == addr
    del d
    assert pool.acquire(100).nbytes == 100 and pool.reused == 1  # below min_bytes
    assert pool.acquire(1000).nbytes == 1000 and pool.reused == 1  # a much smaller size
    assert len(pool._owned) <= 2 and pool.pooled_bytes <= 2 * (5000 + 64)
    del b, c
    pool.clear()
    assert pool.pooled_bytes == 0


@pytest.mark.parametrize("kw", [{"max_buffers": -1}, {"min_bytes": 0}, {"slack": 2.0}])
def test_pool_rejects_bad_settings(kw):
    with pytest.raises(ValueError):
        BufferPool(**kw)


def test_buffer_sink_from_a_pool():
    pool = BufferPool(min_bytes=1)
    a = StreamMux(initiator=True, chunk_size=2048, window_chunks=2)
    b = StreamMux(initiator=False, chunk_size=2048, window_chunks=2,
                  sink_factory=lambda info: BufferSink(pool=pool))
    for seed in range(3):
        data = payload(9000, seed)
        a.send(data)
        done = [e for e in _wire(a, b) if isinstance(e, StreamCompleted)]
        assert bytes(done[0].result) == data.tobytes()
        del done
    assert pool.reused == 2


def test_prefault_leaves_contents_alone_and_place_tracks_it():
    from cellnet.stream._prefault import STEP, prefault

    buf = memoryview(bytearray(b"\x5a" * (3 * 4096 + 100)))
    prefault(buf, 10, buf.nbytes)  # ranges need not be page aligned
    prefault(buf, 50, 20)  # empty: nothing to do
    assert bytes(buf) == b"\x5a" * buf.nbytes
    sink = BufferSink()
    sink.open(stream_pkg_info(2 * STEP + 5))
    assert sink.place(0, 1000).nbytes == 1000 and sink._ready == STEP
    assert sink.place(STEP, 1000) is not None and sink._ready == 2 * STEP
    assert sink.place(2 * STEP, 5) is not None and sink._ready == 2 * STEP + 5
    assert sink.place(2 * STEP, 6) is None  # past the end


def stream_pkg_info(size):
    from cellnet.stream import StreamInfo

    return StreamInfo(1, size, 1 << 20, {})
