"""In-memory stream throughput: chunking + reassembly into a BufferSink vs copy_crc32c / memcpy."""

from __future__ import annotations

import numpy as np
from common import Row, gbps, median_time, memcpy_gbps

from cellnet.native import copy_crc32c, encode_segments
from cellnet.stream import BufferSink, StreamReceiver, StreamSender
from cellnet.stream.tensor_sink import StreamAccumulator, TensorAccumulatorSink


def _transfer(segs, total, sink, chunk, pack=False):
    tx = StreamSender(1, total, segs, chunk_size=chunk, tensor_pack=pack)
    rx = StreamReceiver(sink)
    while not (tx.finished and rx.finished):
        f = tx.next_frame()
        if f is not None:
            rx.receive(f)
        for back in rx.frames_to_send():
            tx.receive(back)
    assert rx.error is None, rx.error
    return rx.result


def run(quick: bool = False) -> list[Row]:
    n = (64 if quick else 256) << 20
    chunk = 1 << 20
    repeat = 3 if quick else 5
    data = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8)
    dst = np.empty_like(data)
    dst.fill(0)
    cc = gbps(n, median_time(lambda: copy_crc32c(dst, data), repeat))
    mc = memcpy_gbps(n, repeat)
    ours = gbps(n, median_time(lambda: _transfer([data], n, BufferSink(dst), chunk), repeat))
    rows = [
        Row("stream", f"chunk+reassemble {n >> 20} MiB, 1 MiB chunks", ours, "GB/s",
            "copy_crc32c", cc, ">= 0.5x"),  # sender CRC + receiver copy: 2 passes, 1 core
        Row("stream", f"chunk+reassemble {n >> 20} MiB (vs memcpy)", ours, "GB/s",
            "memcpy", mc),
    ]
    model = {f"t{i}": np.ones(n // 32, np.float32) for i in range(8)}
    segs = encode_segments(model)
    total = sum(s.nbytes for s in segs)
    acc = StreamAccumulator()

    def fold():
        _transfer(segs, total, TensorAccumulatorSink(acc, 1.0), chunk, pack=True)

    rows.append(Row("stream", f"stream+fold tensor pack {total >> 20} MiB", gbps(total,
                    median_time(fold, repeat)), "GB/s", "memcpy", mc))
    return rows


if __name__ == "__main__":
    for r in run(quick=True):
        print(f"{r.name:48s} {r.value:7.2f} {r.unit}  {r.baseline_name} {r.baseline_value:.2f}"
              f"  ratio {r.ratio:.2f} {r.target}")
