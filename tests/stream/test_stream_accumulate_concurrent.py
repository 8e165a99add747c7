"""Several updates streamed at once into one StreamAccumulator (chunks interleaved round-robin)."""

from __future__ import annotations

import numpy as np
import pytest
from stream_helpers import via_wire

from cellnet.errors import AggregationError
from cellnet.native import encode_segments
from cellnet.stream import StreamCompleted, StreamFailed, StreamMux
from cellnet.stream.tensor_sink import StreamAccumulator, TensorAccumulatorSink


def _model(seed, shape=(50, 40)):
    rng = np.random.default_rng(seed)
    return {f"t{i}": rng.standard_normal(shape).astype(np.float32) for i in range(6)}


def _run(updates, acc):
    a = StreamMux(initiator=True, chunk_size=1000, window_chunks=2)
    b = StreamMux(initiator=False, chunk_size=1000, window_chunks=2,
                  sink_factory=lambda info: TensorAccumulatorSink(acc, 1.0))
    events = []

    def exchange(steps):
        for _ in range(steps):
            moved = False
            if (f := a.next_frame()) is not None:
                events.extend(b.receive(via_wire(f)))
                moved = True
            if (f := b.next_frame()) is not None:
                a.receive(via_wire(f))
                moved = True
            if not moved:
                return

    for m in updates:  # each starts once the ones before have folded a few tensors
        a.send(encode_segments(m), tensor_pack=True)
        exchange(30)
    exchange(100_000)
    return events + b.poll_events()


def test_interleaved_updates_fold_into_one_sum():
    acc = StreamAccumulator()
    models = [_model(s) for s in range(4)]
    events = _run(models, acc)
    assert sum(isinstance(e, StreamCompleted) for e in events) == 4
    for name, got in acc.result().items():
        want = sum(m[name] for m in models) / 4
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_mismatched_update_among_concurrent_ones_is_refused_alone():
    acc = StreamAccumulator()
    good = [_model(1), _model(2)]
    events = _run([good[0], _model(3, shape=(40, 50)), good[1]], acc)
    failed = [e for e in events if isinstance(e, StreamFailed)]
    assert len(failed) == 1 and "shape" in str(failed[0].error)
    assert acc.count == 2 and acc.partial == 0
    with pytest.raises(AggregationError):
        acc.expect({"other": ((1,), np.dtype(np.float32))})
