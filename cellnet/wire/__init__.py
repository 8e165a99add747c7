"""Sans-IO wire layer: frame format, incremental decoder and the Message codec (no sockets)."""

from __future__ import annotations

from cellnet.wire.buffers import PayloadPool
from cellnet.wire.codec import (
    decode_batch,
    decode_message,
    decode_messages,
    encode_batch,
    encode_message,
)
from cellnet.wire.decoder import CLOSED, LARGE_PAYLOAD, NEED_DATA, FrameDecoder
from cellnet.wire.frame import (
    MAGIC,
    PREFIX_SIZE,
    VERSION,
    Frame,
    FrameFlags,
    FrameType,
    encode_frame,
)
from cellnet.wire.limits import WireLimits

__all__ = [
    "CLOSED",
    "LARGE_PAYLOAD",
    "MAGIC",
    "NEED_DATA",
    "PREFIX_SIZE",
    "VERSION",
    "Frame",
    "FrameDecoder",
    "FrameFlags",
    "FrameType",
    "PayloadPool",
    "WireLimits",
    "decode_batch",
    "decode_message",
    "decode_messages",
    "encode_batch",
    "encode_frame",
    "encode_message",
]
