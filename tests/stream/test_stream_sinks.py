"""Sinks: FileSink, BufferSink tensor packs, TensorAccumulatorSink vs numpy; the sans-IO rule."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import numpy as np
import pytest
from stream_helpers import payload, pump

import cellnet
from cellnet.native import encode_segments
from cellnet.stream import (
    BufferSink,
    FileSink,
    RecvState,
    StreamCorruptError,
    StreamReceiver,
    StreamSender,
    StreamUsageError,
)
from cellnet.stream.tensor_sink import FoldedUpdate, StreamAccumulator, TensorAccumulatorSink


def _pack_sender(sid, tensors, chunk, meta=None):
    segs = encode_segments(tensors, meta)
    total = sum(s.nbytes for s in segs)
    return StreamSender(sid, total, segs, chunk_size=chunk, initial_credit=0, tensor_pack=True)


def _update(seed):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((40, 9)).astype(np.float32),
            "b": rng.standard_normal(17).astype(np.float64),
            "e": np.zeros((0, 2), np.float32)}


def test_file_sink_writes_via_part_file(tmp_path):
    data = payload(1000)
    path = tmp_path / "model.bin"
    rx = StreamReceiver(FileSink(path))
    pump(StreamSender(1, 1000, data, chunk_size=64), rx)
    assert rx.result == path and path.read_bytes() == data.tobytes()
    assert not (tmp_path / "model.bin.part").exists()


def test_file_sink_discards_on_abort(tmp_path):
    path = tmp_path / "model.bin"
    tx = StreamSender(1, 1000, payload(1000), chunk_size=64)
    rx = StreamReceiver(FileSink(path))
    rx.receive(tx.next_frame())
    rx.receive(tx.next_frame())
    rx.abort()
    assert list(tmp_path.iterdir()) == []


def test_buffer_sink_decodes_tensor_pack_zero_copy():
    u = _update(1)
    rx = StreamReceiver(BufferSink())
    pump(_pack_sender(1, u, 100, {"round": 3}), rx)
    pack = rx.result
    assert pack.meta == {"round": 3}
    for k in u:
        np.testing.assert_array_equal(pack[k], u[k])
    assert np.shares_memory(np.asarray(pack["w"]), np.asarray(pack["b"])) is False
    assert pack["w"].base is not None


def test_buffer_sink_into_caller_buffer_and_too_small():
    out = bytearray(500)
    rx = StreamReceiver(BufferSink(out))
    data = payload(300)
    pump(StreamSender(1, 300, data, chunk_size=64), rx)
    assert bytes(out[:300]) == data.tobytes()
    rx = StreamReceiver(BufferSink(bytearray(10)))
    ev = rx.receive(StreamSender(2, 300, data).next_frame())
    assert ev.error is not None and rx.state is RecvState.FAILED


@pytest.mark.parametrize("chunk", [7, 64, 100, 5000])
def test_tensor_accumulator_equals_numpy_weighted_mean(chunk):
    ups, ws = [_update(s) for s in range(4)], [1.0, 2.5, 0.5, 3.0]
    acc = StreamAccumulator(np.float64)
    for i, (u, w) in enumerate(zip(ups, ws, strict=True)):
        sink = TensorAccumulatorSink(acc, w)
        rx = StreamReceiver(sink, window_chunks=2)
        pump(_pack_sender(i, u, chunk, {"n": i}), rx)
        assert isinstance(rx.result, FoldedUpdate) and rx.result.meta == {"n": i}
        assert sink.staging_bytes <= max(a.nbytes for a in u.values())
    res = acc.result()
    for k in ("w", "b"):
        ref = sum(w * u[k].astype(np.float64) for u, w in zip(ups, ws, strict=True)) / sum(ws)
        np.testing.assert_allclose(res[k], ref, rtol=1e-6)
        assert res[k].dtype == ups[0][k].dtype
    assert acc.count == 4 and acc.weight("w") == sum(ws)


def test_tensor_accumulator_weight_from_metadata():
    acc = StreamAccumulator()
    rx = StreamReceiver(TensorAccumulatorSink(acc, lambda info, meta: meta["steps"]))
    pump(_pack_sender(1, _update(0), 50, {"steps": 7}), rx)
    assert acc.weight("w") == 7.0


def test_corrupt_tensor_is_never_folded():
    u = _update(2)
    acc = StreamAccumulator()
    segs = encode_segments(u)
    segs[1] = memoryview(bytes(segs[1]))  # same bytes, but now we can flip one
    bad = bytearray(segs[1])
    bad[5] ^= 1
    segs[1] = memoryview(bytes(bad))
    total = sum(s.nbytes for s in segs)
    tx = StreamSender(1, total, segs, chunk_size=100, initial_credit=0, tensor_pack=True)
    rx = StreamReceiver(TensorAccumulatorSink(acc, 1.0))
    events = pump(tx, rx)
    assert isinstance(events[-1].error, StreamCorruptError) and "'w'" in str(events[-1].error)
    assert acc.count == 0 and acc.partial == 0
    with pytest.raises(cellnet.errors.AggregationError):
        acc.result()


def test_mismatched_update_is_refused_before_folding():
    acc = StreamAccumulator()
    pump(_pack_sender(1, _update(0), 64), StreamReceiver(TensorAccumulatorSink(acc)))
    before = acc.result()
    other = {"w": np.ones((3, 3), np.float32)}
    rx = StreamReceiver(TensorAccumulatorSink(acc))
    events = pump(_pack_sender(2, other, 64), rx)
    assert isinstance(events[-1].error, StreamUsageError)
    np.testing.assert_array_equal(acc.result()["w"], before["w"])


def test_not_a_pack_is_refused():
    rx = StreamReceiver(TensorAccumulatorSink(StreamAccumulator()))
    ev = rx.receive(StreamSender(1, 100, payload(100)).next_frame())
    assert ev.error is not None


def test_stream_modules_are_sans_io():
    forbidden = {"trio", "ssl", "socket", "asyncio", "selectors"}
    root = pathlib.Path(cellnet.__file__).resolve().parent / "stream"
    sources = sorted(root.glob("*.py"))
    assert len(sources) >= 9
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & forbidden, path.name


def test_frame_dataclass_replace_keeps_type():
    f = StreamSender(1, 3, b"abc").next_frame()
    assert dataclasses.replace(f).type == f.type
