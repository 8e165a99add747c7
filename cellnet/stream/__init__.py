"""Sans-IO streaming of large payloads: chunked, credit flow-controlled, checksummed, muxed."""

from __future__ import annotations

from cellnet.stream._crc import crc32c_combine
from cellnet.stream._errors import (
    StreamCancelledError,
    StreamCorruptError,
    StreamError,
    StreamLimitError,
    StreamProtocolError,
    StreamResetError,
    StreamUsageError,
)
from cellnet.stream._proto import DEFAULT_CHUNK, DEFAULT_WINDOW_CHUNKS, OutFrame
from cellnet.stream.events import (
    SendCompleted,
    SendFailed,
    StreamCompleted,
    StreamFailed,
    StreamOpened,
)
from cellnet.stream.mux import StreamMux
from cellnet.stream.pool import BufferPool
from cellnet.stream.receiver import RecvState, StreamReceiver
from cellnet.stream.sender import SendState, StreamSender
from cellnet.stream.sinks import BufferSink, FileSink, Sink, StreamInfo

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_WINDOW_CHUNKS",
    "BufferPool",
    "BufferSink",
    "FileSink",
    "OutFrame",
    "RecvState",
    "SendCompleted",
    "SendFailed",
    "SendState",
    "Sink",
    "StreamCancelledError",
    "StreamCompleted",
    "StreamCorruptError",
    "StreamError",
    "StreamFailed",
    "StreamInfo",
    "StreamLimitError",
    "StreamMux",
    "StreamOpened",
    "StreamProtocolError",
    "StreamReceiver",
    "StreamResetError",
    "StreamSender",
    "StreamUsageError",
    "crc32c_combine",
]
