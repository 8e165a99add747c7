"""STREAM_OPEN is built by one helper for senders and relays: same headers for the same stream."""

from cellnet.stream import StreamSender
from cellnet.stream._proto import K_CRC, K_MSG, K_PACK, open_frame
from cellnet.wire.frame import FrameType


def test_open_frame_optional_headers_only_when_set():
    bare = open_frame(3, 10, 4, 8, None, {}, False)
    assert bare.type is FrameType.STREAM_OPEN
    assert bare.headers == {"sid": 3, "size": 10, "chunk": 4, "credit": 8}
    full = open_frame(3, 10, 4, 8, 0xABC, {"a": 1}, True)
    assert full.headers[K_CRC] == 0xABC and full.headers[K_MSG] == {"a": 1}
    assert full.headers[K_PACK] is True


def test_sender_open_matches_open_frame():
    tx = StreamSender(5, 6, b"abcdef", chunk_size=2, initial_credit=4, headers={"m": "x"},
                      tensor_pack=True, payload_crc=7)
    frame = tx.next_frame()
    assert frame == open_frame(5, 6, 2, 4, 7, {"m": "x"}, True)
