"""Wire codec rates: 100-byte messages (single and 64 per BATCH) and 16 MiB payload frames.

Small messages are judged against a bare ``cbor2`` round trip of the same
headers and payload (the serialisation floor, with no framing or checksums);
large frames against ``memcpy`` of the same size, both measured in this run.
Large frames are fed to the decoder in 1 MiB chunks, as a socket read would,
with ``next_frame`` called after each one, as a link does;
receiving one is a copy fused with its CRC32C (``copy_crc32c``), so that
kernel is shown as the second ceiling.
"""

from __future__ import annotations

import cbor2
from common import Row, gbps, median_time, memcpy_gbps

from cellnet.message import Message
from cellnet.native import copy_crc32c
from cellnet.wire import (
    NEED_DATA,
    FrameDecoder,
    PayloadPool,
    WireLimits,
    decode_batch,
    decode_message,
    encode_batch,
    encode_frame,
    encode_message,
)
from cellnet.wire.frame import FrameType, aligned_buffer

GROUP = "wire"
MiB = 1 << 20


def _small_messages(n: int) -> list[Message]:
    return [
        Message.request("task", "train", bytes([i & 0xFF]) * 100, req_id=i, origin="site-1",
                        destination="server")
        for i in range(n)
    ]


def _single_round_trip(msgs: list[Message]) -> None:
    dec = FrameDecoder()
    for m in msgs:
        for seg in encode_message(m):
            dec.receive_data(seg)
        decode_message(dec.next_frame())


def _batch_round_trip(msgs: list[Message], size: int) -> None:
    dec = FrameDecoder()
    for i in range(0, len(msgs), size):
        dec.receive_data(b"".join(encode_batch(msgs[i : i + size])))
        decode_batch(dec.next_frame())


def _cbor_round_trip(msgs: list[Message]) -> None:
    for m in msgs:
        cbor2.loads(cbor2.dumps([m.headers, m.payload]))


def _decode_large(dec: FrameDecoder, data: bytes, frames: int) -> None:
    view = memoryview(data)
    got = 0
    for _ in range(frames):
        for i in range(0, len(view), MiB):  # a link drains the decoder after every read
            dec.receive_data(view[i : i + MiB])
            frame = dec.next_frame()
            got += frame is not NEED_DATA
    assert got == frames


def run(quick: bool) -> list[Row]:
    n = 2_000 if quick else 20_000
    repeat = 3 if quick else 7
    msgs = _small_messages(n)
    t_cbor = median_time(lambda: _cbor_round_trip(msgs), repeat)
    base = n / t_cbor
    base_name = "cbor2 dumps+loads (no framing)"
    rows = [
        Row(GROUP, "100 B msg encode+decode, one frame each", n / median_time(
            lambda: _single_round_trip(msgs), repeat), "msg/s", base_name, base),
        Row(GROUP, "100 B msg encode+decode, 64 per BATCH", n / median_time(
            lambda: _batch_round_trip(msgs, 64), repeat), "msg/s", base_name, base),
    ]

    size = 16 * MiB
    frames = 2 if quick else 4
    payload = bytearray(size)
    payload[::4096] = b"\x01" * len(payload[::4096])
    data = b"".join(encode_frame(FrameType.MESSAGE, {"cellnet.topic": "model"}, payload))
    ceiling = memcpy_gbps(size, repeat)
    dst = aligned_buffer(size)
    dst[:] = payload
    src = memoryview(payload)

    def kernel_in_steps():  # the copy+CRC a link does, one 1 MiB read at a time
        crc = 0
        for i in range(0, size, MiB):
            crc = copy_crc32c(dst[i : i + MiB], src[i : i + MiB], crc)

    t_kernel = median_time(kernel_in_steps, repeat)
    limits = WireLimits(max_payload_bytes=size)
    fresh = FrameDecoder(limits)  # one decoder per link, as a link would hold it
    pooled = FrameDecoder(limits, allocate_payload=PayloadPool())
    t_fresh = median_time(lambda: _decode_large(fresh, data, frames), repeat)
    t_reuse = median_time(lambda: _decode_large(pooled, data, frames), repeat)
    t_enc = median_time(
        lambda: encode_frame(FrameType.MESSAGE, {"cellnet.topic": "model"}, payload), repeat
    )
    rows += [
        Row(GROUP, "16 MiB frame decode (new buffer per frame)", gbps(size * frames, t_fresh),
            "GB/s", "memcpy", ceiling),
        Row(GROUP, "16 MiB frame decode (PayloadPool)", gbps(size * frames, t_reuse),
            "GB/s", "memcpy", ceiling),
        Row(GROUP, "16 MiB frame decode (PayloadPool) vs its kernel",
            gbps(size * frames, t_reuse), "GB/s", "copy_crc32c in 1 MiB steps",
            gbps(size, t_kernel), ">= 0.7x"),
        Row(GROUP, "16 MiB frame encode (CRC, no copy)", gbps(size, t_enc), "GB/s", "memcpy",
            ceiling, ">= 0.8x"),
    ]
    return rows


if __name__ == "__main__":
    import sys

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from run import print_table

    print_table(run(quick="--quick" in sys.argv))
