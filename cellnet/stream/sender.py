"""StreamSender: the sending half of one stream as a sans-IO state machine (frames out, no I/O).

Theory of operation.  The payload is a list of segments (e.g. the tensor
pack's ``encode_segments``); chunks are memoryview slices walked across those
segments, so nothing is concatenated and a chunk that straddles a segment
boundary is simply two views.  :meth:`next_frame` hands out OPEN, then one
DATA frame per call while credit allows, then END; it returns ``None`` while
the sender waits for credit.  Credit is absolute and in bytes (see
``_proto``): a chunk goes out only when all of it fits below ``upto``.  Each
chunk's CRC32C travels in its DATA headers and the whole-payload CRC is folded
from the chunk CRCs (``crc32c_combine``), so the data is read once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from cellnet.native import crc32c
from cellnet.stream._crc import crc32c_combine
from cellnet.stream._errors import (
    StreamCancelledError,
    StreamCorruptError,
    StreamError,
    StreamProtocolError,
    StreamResetError,
    StreamUsageError,
)
from cellnet.stream._proto import (
    DEFAULT_CHUNK,
    DEFAULT_WINDOW_CHUNKS,
    K_CRC,
    K_ID,
    K_OFF,
    K_UPTO,
    MAX_ID,
    MAX_SIZE,
    RESET_CANCEL,
    RESET_CORRUPT,
    OutFrame,
    int_header,
    open_frame,
    reset_frame,
    reset_text,
)
from cellnet.wire.frame import FrameType, as_byte_view

Progress = Callable[[int, int], None]


class SendState(enum.Enum):
    """Where a sender is: IDLE (nothing sent), SENDING, DONE (END sent) or a failure."""

    IDLE = "idle"
    SENDING = "sending"
    DONE = "done"
    CANCELLED = "cancelled"
    RESET = "reset"  # the peer reset it
    FAILED = "failed"  # the source changed under us (CRC mismatch)


def _segments(source: Any) -> list[memoryview]:
    try:
        items = list(source) if isinstance(source, list | tuple) else [source]
        return [v for v in (as_byte_view(s, "stream source") for s in items) if v.nbytes]
    except Exception as exc:
        raise StreamUsageError(f"stream source must be a buffer or a list of buffers: {exc}") \
            from None


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise StreamUsageError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return value


class StreamSender:
    """Sends one payload as OPEN, DATA... END, never past the receiver's credit."""

    def __init__(
        self,
        stream_id: int,
        total_size: int,
        source: Any,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        initial_credit: int | None = None,
        headers: Mapping[str, Any] | None = None,
        tensor_pack: bool = False,
        payload_crc: int | None = None,
        on_progress: Progress | None = None,
    ):
        self.stream_id = _check_int("stream_id", stream_id, 0, MAX_ID)
        self.total_size = _check_int("total_size", total_size, 0, MAX_SIZE)
        self.chunk_size = _check_int("chunk_size", chunk_size, 1, 2**32)
        if initial_credit is None:
            initial_credit = chunk_size * DEFAULT_WINDOW_CHUNKS
        self._upto = _check_int("initial_credit", initial_credit, 0, MAX_SIZE)
        self.initial_credit = initial_credit
        if payload_crc is not None:
            _check_int("payload_crc", payload_crc, 0, 2**32 - 1)
        if headers is not None and not isinstance(headers, Mapping):
            raise StreamUsageError("headers must be a mapping")
        segs = _segments(source)
        have = sum(s.nbytes for s in segs)
        if have != total_size:
            raise StreamUsageError(f"source holds {have} bytes, total_size says {total_size}")
        self._segs = segs
        self._seg = 0  # index of the segment the next chunk starts in
        self._pos = 0  # position inside that segment
        self._msg = dict(headers or {})
        self._pack = bool(tensor_pack)
        self._declared_crc = payload_crc
        self._crc = 0
        self._sent = 0
        self._on_progress = on_progress
        self.state = SendState.IDLE
        self.error: StreamError | None = None

    # ------------------------------------------------------------ queries
    @property
    def bytes_sent(self) -> int:
        """Payload bytes handed out in DATA frames so far."""
        return self._sent

    @property
    def progress(self) -> tuple[int, int]:
        """``(bytes sent, total bytes)``."""
        return self._sent, self.total_size

    @property
    def credit(self) -> int:
        """Bytes the receiver lets us send now."""
        return max(0, self._upto - self._sent)

    @property
    def finished(self) -> bool:
        """True once the stream is over, successfully or not."""
        return self.state not in (SendState.IDLE, SendState.SENDING)

    def ready(self) -> bool:
        """Whether :meth:`next_frame` would return a frame now."""
        if self.state is SendState.IDLE:
            return True
        if self.state is not SendState.SENDING:
            return False
        left = self.total_size - self._sent
        return left == 0 or self.credit >= min(self.chunk_size, left)

    # ------------------------------------------------------------ frames out
    def next_frame(self) -> OutFrame | None:
        """The next frame to send, or None (waiting for credit, or finished)."""
        if self.state is SendState.IDLE:
            self.state = SendState.SENDING
            return self._open()
        if not self.ready():
            return None
        if self._sent == self.total_size:
            return self._end()
        return self._data(min(self.chunk_size, self.total_size - self._sent))

    def _open(self) -> OutFrame:
        return open_frame(self.stream_id, self.total_size, self.chunk_size, self.initial_credit,
                          self._declared_crc, self._msg, self._pack)

    def _take(self, n: int) -> tuple[memoryview, ...]:
        pieces = []
        while n:
            seg = self._segs[self._seg]
            k = min(n, seg.nbytes - self._pos)
            pieces.append(seg[self._pos : self._pos + k])
            self._pos += k
            n -= k
            if self._pos == seg.nbytes:
                self._seg += 1
                self._pos = 0
        return tuple(pieces)

    def _data(self, n: int) -> OutFrame:
        pieces = self._take(n)
        crc = 0
        for p in pieces:
            crc = crc32c(p, crc)
        self._crc = crc32c_combine(self._crc, crc, n)
        off = self._sent
        self._sent += n
        frame = OutFrame(FrameType.STREAM_DATA, {K_ID: self.stream_id, K_OFF: off, K_CRC: crc},
                         pieces)
        if self._on_progress is not None:
            self._on_progress(self._sent, self.total_size)
        return frame

    def _end(self) -> OutFrame:
        self._release()
        if self._declared_crc is not None and self._declared_crc != self._crc:
            self.state = SendState.FAILED
            self.error = StreamCorruptError(
                f"stream {self.stream_id}: the source changed while it was sent "
                f"(CRC {self._crc:#010x}, declared {self._declared_crc:#010x})", self.stream_id)
            return reset_frame(self.stream_id, RESET_CORRUPT, str(self.error))
        self.state = SendState.DONE
        return OutFrame(FrameType.STREAM_END, {K_ID: self.stream_id, K_CRC: self._crc})

    def _release(self) -> None:
        self._segs = []

    # ------------------------------------------------------------ frames in
    def receive(self, frame: Any) -> None:
        """Take a CREDIT or RESET frame from the receiver (others: StreamProtocolError)."""
        headers = frame.headers
        if frame.type == FrameType.STREAM_CREDIT:
            upto = int_header(headers, K_UPTO, 0, MAX_SIZE, self.stream_id)
            self._upto = max(self._upto, upto)
        elif frame.type == FrameType.STREAM_RESET:
            if self.finished:
                return
            code, reason = reset_text(headers)
            self._release()
            self.state = SendState.RESET
            self.error = StreamResetError(
                f"stream {self.stream_id} reset by the receiver ({code}): {reason}",
                self.stream_id, reason)
        else:
            raise StreamProtocolError(
                f"stream {self.stream_id}: a sender cannot receive {frame.type!r}", self.stream_id)

    def cancel(self, reason: str = "cancelled") -> OutFrame | None:
        """Stop sending; the RESET frame to send (None if the peer never saw the stream)."""
        if self.finished:
            return None
        opened = self.state is SendState.SENDING
        self._release()
        self.state = SendState.CANCELLED
        self.error = StreamCancelledError(
            f"stream {self.stream_id} cancelled: {reason}", self.stream_id)
        return reset_frame(self.stream_id, RESET_CANCEL, reason) if opened else None

    def __repr__(self) -> str:
        return (f"StreamSender(id={self.stream_id}, {self.state.value}, "
                f"{self._sent}/{self.total_size} bytes, credit={self.credit})")
