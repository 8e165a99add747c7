"""StreamSender/StreamReceiver: round trips, credit, progress, cancel, corruption, limits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_helpers import payload, pump, split, via_wire

from cellnet.errors import ChecksumError
from cellnet.native import crc32c
from cellnet.stream import (
    BufferSink,
    RecvState,
    SendState,
    StreamCancelledError,
    StreamCompleted,
    StreamCorruptError,
    StreamFailed,
    StreamLimitError,
    StreamProtocolError,
    StreamReceiver,
    StreamResetError,
    StreamSender,
    StreamUsageError,
    crc32c_combine,
)
from cellnet.stream._proto import K_CRC, OutFrame
from cellnet.wire import FrameType


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(0, 2**32 - 1))
def test_crc32c_combine_equals_crc_of_concatenation(a, b, seed):
    assert crc32c_combine(crc32c(a, 0), crc32c(b), len(b)) == crc32c(a + b)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 3000), chunk=st.integers(1, 400), window=st.integers(1, 4),
       cuts=st.lists(st.integers(1, 2999), max_size=5), credit=st.integers(0, 4),
       wire=st.booleans())
def test_round_trip_many_chunks(n, chunk, window, cuts, credit, wire):
    data = payload(n)
    tx = StreamSender(7, n, split(data, cuts), chunk_size=chunk,
                      initial_credit=min(credit, window) * chunk, headers={"topic": "t"})
    rx = StreamReceiver(BufferSink(), window_chunks=window)
    events = pump(tx, rx, wire=wire)
    assert tx.state is SendState.DONE and rx.state is RecvState.DONE
    assert isinstance(events[-1], StreamCompleted)
    assert events[-1].info.headers == {"topic": "t"}
    assert bytes(rx.result) == data.tobytes()
    assert tx.progress == (n, n)


def test_chunks_are_views_spanning_segments_without_copy():
    data = payload(100)
    segs = split(data, [30, 31, 70])
    tx = StreamSender(1, 100, segs, chunk_size=50, initial_credit=100)
    tx.next_frame()  # OPEN
    first = tx.next_frame()
    assert [p.nbytes for p in first.payload] == [30, 1, 19]
    assert all(np.shares_memory(np.asarray(p), data) for p in first.payload)
    assert first.headers[K_CRC] == crc32c(data[:50])


def test_sender_never_exceeds_credit():
    tx = StreamSender(1, 1000, payload(1000), chunk_size=100, initial_credit=250)
    tx.next_frame()
    frames = [tx.next_frame() for _ in range(5)]
    assert [f is not None for f in frames] == [True, True, False, False, False]
    assert tx.bytes_sent == 200 and not tx.ready()
    tx.receive(OutFrame(FrameType.STREAM_CREDIT, {"sid": 1, "upto": 300}))
    assert tx.next_frame().headers["off"] == 200 and tx.next_frame() is None


def test_receiver_grants_credit_as_data_arrives_and_window_bounds_it():
    tx = StreamSender(1, 2000, payload(2000), chunk_size=100, initial_credit=0)
    rx = StreamReceiver(BufferSink(), window_chunks=2)
    rx.receive(tx.next_frame())
    grants = rx.frames_to_send()
    assert [g.headers["upto"] for g in grants] == [200]
    tx.receive(grants[0])
    pump(tx, rx)
    assert rx.state is RecvState.DONE


def test_receiver_rejects_data_beyond_granted_credit():
    tx = StreamSender(1, 1000, payload(1000), chunk_size=100, initial_credit=300)
    rx = StreamReceiver(BufferSink(), window_chunks=2)  # window 200 < assumed 300
    ev = rx.receive(tx.next_frame())
    assert isinstance(ev, StreamFailed) and isinstance(ev.error, StreamLimitError)
    [reset] = rx.frames_to_send()
    assert reset.type is FrameType.STREAM_RESET and reset.headers["code"] == "limit"


def test_progress_callbacks_on_both_sides():
    seen_tx, seen_rx = [], []
    tx = StreamSender(1, 250, payload(250), chunk_size=100,
                      on_progress=lambda d, t: seen_tx.append((d, t)))
    rx = StreamReceiver(BufferSink(), on_progress=lambda d, t: seen_rx.append((d, t)))
    pump(tx, rx)
    assert seen_tx == seen_rx == [(100, 250), (200, 250), (250, 250)]


def test_corrupt_chunk_resets_and_never_exposes_payload():
    tx = StreamSender(1, 300, payload(300), chunk_size=100)
    sink = BufferSink()
    rx = StreamReceiver(sink)
    rx.receive(tx.next_frame())
    rx.receive(tx.next_frame())
    bad = tx.next_frame()
    bad = dataclasses.replace(bad, payload=(memoryview(bytes(100)),))
    ev = rx.receive(bad)
    assert isinstance(ev, StreamFailed) and isinstance(ev.error, StreamCorruptError)
    assert isinstance(ev.error, ChecksumError)
    assert rx.state is RecvState.FAILED and rx.result is None and sink._buf is None
    [reset] = rx.frames_to_send()
    assert reset.headers["code"] == "corrupt"
    tx.receive(reset)
    assert tx.state is SendState.RESET and isinstance(tx.error, StreamResetError)
    assert rx.receive(tx.next_frame() or bad) is None  # late frames are ignored


def test_whole_crc_mismatch_at_end_is_corrupt():
    tx = StreamSender(1, 100, payload(100), chunk_size=100)
    rx = StreamReceiver(BufferSink())
    rx.receive(tx.next_frame())
    rx.receive(tx.next_frame())
    end = tx.next_frame()
    ev = rx.receive(dataclasses.replace(end, headers={**end.headers, K_CRC: 1}))
    assert isinstance(ev.error, StreamCorruptError) and rx.result is None


def test_source_modified_during_send_is_detected_by_declared_crc():
    data = payload(200)
    tx = StreamSender(1, 200, data, chunk_size=100, payload_crc=crc32c(data))
    rx = StreamReceiver(BufferSink())
    rx.receive(tx.next_frame())
    rx.receive(tx.next_frame())
    data[150] ^= 0xFF
    rx.receive(tx.next_frame())
    last = tx.next_frame()
    assert last.type is FrameType.STREAM_RESET and tx.state is SendState.FAILED
    ev = rx.receive(last)
    assert isinstance(ev.error, StreamResetError) and rx.result is None


def test_cancel_by_sender_and_by_receiver():
    tx = StreamSender(1, 500, payload(500), chunk_size=100)
    rx = StreamReceiver(BufferSink())
    rx.receive(tx.next_frame())
    rx.receive(tx.next_frame())
    ev = rx.receive(tx.cancel("user pressed stop"))
    assert isinstance(ev.error, StreamResetError) and "user pressed stop" in str(ev.error)
    assert tx.state is SendState.CANCELLED and tx.cancel() is None

    tx = StreamSender(2, 500, payload(500), chunk_size=100)
    rx = StreamReceiver(BufferSink())
    rx.receive(tx.next_frame())
    tx.receive(via_wire(rx.cancel("not interested")))
    assert tx.state is SendState.RESET and tx.next_frame() is None
    assert isinstance(rx.error, StreamCancelledError)


def test_cancel_before_open_sends_nothing():
    tx = StreamSender(1, 10, payload(10))
    assert tx.cancel() is None and tx.finished


def test_truncated_stream_abort_frees_the_sink():
    tx = StreamSender(1, 500, payload(500), chunk_size=100)
    sink = BufferSink()
    rx = StreamReceiver(sink)
    rx.receive(tx.next_frame())
    rx.receive(tx.next_frame())
    assert sink._buf is not None
    ev = rx.abort("link lost")
    assert isinstance(ev, StreamFailed) and isinstance(ev.error, StreamCancelledError)
    assert sink._buf is None and rx.frames_to_send() == [] and rx.abort() is None


def test_end_before_all_data_is_a_protocol_error():
    rx = StreamReceiver(BufferSink())
    rx.receive(OutFrame(FrameType.STREAM_OPEN, {"sid": 1, "size": 10, "chunk": 10,
                                                "credit": 10}))
    ev = rx.receive(OutFrame(FrameType.STREAM_END, {"sid": 1, "crc": 0}))
    assert isinstance(ev.error, StreamProtocolError)


@pytest.mark.parametrize("headers, err", [
    ({"sid": 1, "size": 10**9, "chunk": 10, "credit": 0}, StreamLimitError),
    ({"sid": 1, "size": 10, "chunk": 10**9, "credit": 0}, StreamLimitError),
    ({"sid": 1, "size": -1, "chunk": 10, "credit": 0}, StreamProtocolError),
    ({"sid": 1, "size": 10, "chunk": 10}, StreamProtocolError),
    ({"sid": 1, "size": 10, "chunk": 10, "credit": 0, "msg": [1]}, StreamProtocolError),
])
def test_bad_or_oversize_open_is_refused_before_allocating(headers, err):
    opened = []

    class Spy(BufferSink):
        def open(self, info):
            opened.append(info)
            super().open(info)

    rx = StreamReceiver(Spy(), max_size=10**6, max_chunk=1000)
    ev = rx.receive(OutFrame(FrameType.STREAM_OPEN, headers))
    assert isinstance(ev.error, err) and opened == []
    assert rx.frames_to_send()[0].type is FrameType.STREAM_RESET


def test_out_of_order_chunk_is_refused():
    tx = StreamSender(1, 300, payload(300), chunk_size=100)
    rx = StreamReceiver(BufferSink())
    rx.receive(tx.next_frame())
    tx.next_frame()
    ev = rx.receive(tx.next_frame())
    assert isinstance(ev.error, StreamProtocolError) and "expected 0" in str(ev.error)


@pytest.mark.parametrize("kwargs", [
    {"stream_id": -1}, {"total_size": 11}, {"chunk_size": 0}, {"initial_credit": -5},
    {"source": 42}, {"payload_crc": 2**40},
])
def test_sender_bad_arguments(kwargs):
    args = {"stream_id": 1, "total_size": 10, "source": bytes(10), **kwargs}
    with pytest.raises(StreamUsageError):
        StreamSender(args.pop("stream_id"), args.pop("total_size"), args.pop("source"), **args)


def test_empty_stream():
    tx = StreamSender(1, 0, [])
    rx = StreamReceiver(BufferSink())
    pump(tx, rx)
    assert rx.state is RecvState.DONE and bytes(rx.result) == b""
