"""StreamMux: fair interleaving, control first, limits, link loss, relay forwarding."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from stream_helpers import payload

from cellnet.stream import (
    SendCompleted,
    StreamCompleted,
    StreamFailed,
    StreamLimitError,
    StreamMux,
)
from cellnet.wire import Frame, FrameType


def _exchange(a: StreamMux, b: StreamMux, order, limit=100_000):
    """Deliver frames both ways, picking the direction from ``order``; return b's events."""
    got_b, got_a, i = [], [], 0
    for _ in range(limit):
        first = (order[i % len(order)] if order else True)
        i += 1
        progressed = False
        for src, dst, sink in ((a, b, got_b), (b, a, got_a)) if first else \
                ((b, a, got_a), (a, b, got_b)):
            f = src.next_frame()
            if f is not None:
                progressed = True
                if f.type in (FrameType.MESSAGE,):
                    sink.append(f)
                else:
                    sink.extend(dst.receive(f))
        if not progressed:
            break
    return got_b + b.poll_events(), got_a + a.poll_events()


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 700), min_size=1, max_size=5),
       order=st.lists(st.booleans(), max_size=8))
def test_random_interleavings_deliver_every_stream(sizes, order):
    a, b = StreamMux(initiator=True, chunk_size=64, window_chunks=2), \
        StreamMux(initiator=False, chunk_size=64, window_chunks=2)
    datas = [payload(n, seed=i) for i, n in enumerate(sizes)]
    txs = [a.send(d, headers={"i": i}) for i, d in enumerate(datas)]
    events, back = _exchange(a, b, order)
    done = {e.info.headers["i"]: bytes(e.result) for e in events
            if isinstance(e, StreamCompleted)}
    assert done == {i: d.tobytes() for i, d in enumerate(datas)}
    assert all(tx.finished and tx.error is None for tx in txs)
    assert sum(isinstance(e, SendCompleted) for e in back) == len(sizes)
    assert a.statistics() == b.statistics() == {"outgoing": 0, "incoming": 0,
                                                  "control_queued": 0}


def test_round_robin_is_fair_and_control_goes_first():
    a = StreamMux(initiator=True, chunk_size=10, window_chunks=4)
    s1, s2 = a.send(payload(100)), a.send(payload(100, 1))
    order = [a.next_frame() for _ in range(2)]  # two OPENs
    a.send_control(Frame(FrameType.MESSAGE, {"x": 1}, b"small"))
    nxt = a.next_frame()
    assert nxt.type is FrameType.MESSAGE
    ids = [a.next_frame().headers["sid"] for _ in range(6)]
    assert ids == [s1.stream_id, s2.stream_id] * 3
    assert [f.type for f in order] == [FrameType.STREAM_OPEN] * 2
    a.send_control(Frame(FrameType.MESSAGE, {}, b"again"))
    assert a.next_frame().type is FrameType.MESSAGE


def test_too_many_streams_refused_others_unaffected():
    a = StreamMux(initiator=True, chunk_size=32)
    b = StreamMux(initiator=False, chunk_size=32, max_incoming=2)
    datas = [payload(200, i) for i in range(3)]
    for d in datas:
        a.send(d)
    events, _ = _exchange(a, b, [True])
    failed = [e for e in events if isinstance(e, StreamFailed)]
    assert len(failed) >= 1 and isinstance(failed[0].error, StreamLimitError)
    assert "limit 2" in str(failed[0].error)
    completed = [bytes(e.result) for e in events if isinstance(e, StreamCompleted)]
    assert completed == [datas[0].tobytes(), datas[1].tobytes()]


def test_oversize_stream_refused_with_reason():
    a = StreamMux(initiator=True, chunk_size=32)
    b = StreamMux(initiator=False, chunk_size=32, max_stream_size=100)
    tx = a.send(payload(101))
    small = a.send(payload(50))
    events, _ = _exchange(a, b, [True])
    assert tx.error is not None and "limit is 100" in str(tx.error)
    assert small.error is None and any(isinstance(e, StreamCompleted) for e in events)


def test_link_loss_aborts_everything():
    a = StreamMux(initiator=True, chunk_size=16)
    b = StreamMux(initiator=False, chunk_size=16)
    tx = a.send(payload(1000))
    for _ in range(3):
        b.receive(a.next_frame())
    lost_b = b.close()
    lost_a = a.close()
    assert [type(e) for e in lost_b] == [StreamFailed] and tx.finished
    assert [type(e) for e in lost_a] == [type(lost_a[0])] and lost_a[0].error is not None
    assert b.statistics()["incoming"] == 0


def test_receiver_side_cancel_through_mux():
    a = StreamMux(initiator=True, chunk_size=16)
    b = StreamMux(initiator=False, chunk_size=16)
    tx = a.send(payload(1000))
    b.receive(a.next_frame())
    b.cancel(tx.stream_id, "no thanks")
    a.receive(b.next_frame())
    assert tx.error is not None and "no thanks" in str(tx.error)


def test_relay_forwards_chunks_with_bounded_buffering():
    chunk, window = 32, 2
    src = StreamMux(initiator=True, chunk_size=chunk, window_chunks=window)
    relay_in = StreamMux(initiator=False, chunk_size=chunk, window_chunks=window,
                         forward=lambda msg: relay_out if msg.get("to") == "far" else None)
    relay_out = StreamMux(initiator=True, chunk_size=chunk, window_chunks=window)
    dst = StreamMux(initiator=False, chunk_size=chunk, window_chunks=window)
    data = payload(5000)
    src.send(data, headers={"to": "far"})
    done, peak, idle = [], 0, 0
    for step in range(20_000):
        moved = False
        # the far side is slow: it reads only every third step
        for x, y, ok in ((src, relay_in, True), (relay_in, src, True),
                         (relay_out, dst, step % 3 == 0), (dst, relay_out, True)):
            if ok and (f := x.next_frame()) is not None:
                done += y.receive(f)
                moved = True
        relays = [s.relay for s in relay_out._out.values()]
        peak = max([peak, *(r.pending for r in relays)])
        idle = 0 if moved else idle + 1
        if idle > 3:
            break
    got = [e for e in done if isinstance(e, StreamCompleted) and isinstance(e.result, memoryview)]
    assert bytes(got[-1].result) == data.tobytes()
    assert 0 < peak <= chunk * window


def test_relay_propagates_downstream_reset_upstream():
    src = StreamMux(initiator=True, chunk_size=16)
    r_in = StreamMux(initiator=False, chunk_size=16, forward=lambda m: r_out)
    r_out = StreamMux(initiator=True, chunk_size=16)
    dst = StreamMux(initiator=False, chunk_size=16, max_stream_size=100)
    tx = src.send(payload(500))
    for _ in range(50):
        for x, y in ((src, r_in), (r_in, src), (r_out, dst), (dst, r_out)):
            if (f := x.next_frame()) is not None:
                y.receive(f)
    assert tx.error is not None and "limit is 100" in str(tx.error)


def test_relay_whose_next_hop_is_lost_while_its_sender_waits_for_credit_is_forgotten():
    """The sender has used its window and waits: no later frame would retire the relayed
    stream, so losing the downstream link must free its slot in the upstream mux at once."""
    src = StreamMux(initiator=True, chunk_size=16, window_chunks=2)
    r_in = StreamMux(initiator=False, chunk_size=16, window_chunks=2, max_incoming=1,
                     forward=lambda m: r_out)
    r_out = StreamMux(initiator=True, chunk_size=16, window_chunks=2)
    tx = src.send(payload(200))
    while (f := src.next_frame()) is not None:  # OPEN and one window of chunks, then it waits
        r_in.receive(f)
    assert r_in.statistics()["incoming"] == 1 and not tx.finished
    for sid in list(r_out._out):  # the downstream link goes away before anything left
        r_out.cancel(sid, "downstream link lost")
    assert r_in.statistics()["incoming"] == 0  # the slot is free again
    while (f := r_in.next_frame()) is not None:
        src.receive(f)
    assert tx.error is not None  # the sender heard of it (RESET)
    src.send(payload(20))  # and a new stream fits under max_incoming=1 again
    while (f := src.next_frame()) is not None:
        assert not [e for e in r_in.receive(f) if isinstance(e, StreamFailed)]
    assert r_in.relayed == 2
