"""StreamReceiver: the receiving half of one stream as a sans-IO state machine.

Theory of operation.  Frames in (:meth:`receive`), events and CREDIT/RESET
frames out (:meth:`frames_to_send`).  The OPEN is checked against the limits
(size, chunk size, initial credit <= window) *before* the sink allocates
anything.  Each DATA frame must start where the previous one ended, fit in
the declared size and below the credit granted so far; its bytes go straight
into the sink, which returns their CRC32C from the copy, and that must match
the chunk's header -- or, when the frame decoder already computed the
payload's CRC (``Frame.payload_crc``, e.g. while decrypting the chunk
straight into the sink's :meth:`~Sink.place`), that CRC is compared first
and the sink's ``write_checked`` stores the chunk without a second pass.  The whole-payload CRC is
folded from chunk CRCs and checked at END (and against the OPEN's, when it declared one).  Credit is
granted in bytes: ``upto = consumed + window`` (consumed: received minus what
the sink still holds, its ``pending``), sent when the sender would
otherwise stall or half a window has been consumed.  Any failure discards the
sink and queues a RESET; the payload is only ever exposed after every check.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from cellnet.stream._crc import crc32c_combine
from cellnet.stream._errors import (
    StreamCancelledError,
    StreamCorruptError,
    StreamError,
    StreamLimitError,
    StreamProtocolError,
    StreamResetError,
)
from cellnet.stream._proto import (
    DEFAULT_WINDOW_CHUNKS,
    K_CHUNK,
    K_CRC,
    K_CREDIT,
    K_ID,
    K_MSG,
    K_OFF,
    K_PACK,
    K_SIZE,
    MAX_ID,
    MAX_SIZE,
    RESET_ABORTED,
    RESET_CANCEL,
    RESET_CORRUPT,
    RESET_LIMIT,
    RESET_PROTOCOL,
    OutFrame,
    credit_frame,
    int_header,
    payload_views,
    reset_frame,
    reset_text,
)
from cellnet.stream.events import Event, StreamCompleted, StreamFailed, StreamOpened
from cellnet.stream.sinks import Sink, StreamInfo
from cellnet.wire.frame import FrameType

#: Default largest stream a receiver accepts (configurable per receiver / mux).
DEFAULT_MAX_SIZE = 64 << 30
#: Default largest chunk a receiver accepts.
DEFAULT_MAX_CHUNK = 16 << 20

_CODES = {StreamCorruptError: RESET_CORRUPT, StreamLimitError: RESET_LIMIT,
          StreamProtocolError: RESET_PROTOCOL}


class RecvState(enum.Enum):
    """WAIT_OPEN, RECEIVING, then DONE or FAILED."""

    WAIT_OPEN = "wait-open"
    RECEIVING = "receiving"
    DONE = "done"
    FAILED = "failed"


class StreamReceiver:
    """Receives one stream into a :class:`Sink`, granting credit as the sink takes data."""

    def __init__(
        self,
        sink: Sink,
        *,
        stream_id: int | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        window_chunks: int = DEFAULT_WINDOW_CHUNKS,
        on_progress: Callable[[int, int], None] | None = None,
    ):
        if type(window_chunks) is not int or window_chunks < 1:
            raise ValueError(f"window_chunks must be an int >= 1, got {window_chunks!r}")
        self.sink: Sink | None = sink
        self.stream_id = stream_id
        self.max_size = max_size
        self.max_chunk = max_chunk
        self.window_chunks = window_chunks
        self._on_progress = on_progress
        self.state = RecvState.WAIT_OPEN
        self.info: StreamInfo | None = None
        self.error: StreamError | None = None
        self.result: Any = None
        self.window = 0
        self._received = 0
        self._granted = 0
        self._crc = 0
        self._out: list[OutFrame] = []

    # ------------------------------------------------------------ queries
    @property
    def progress(self) -> tuple[int, int]:
        """``(bytes received, total bytes)`` (total is 0 before OPEN)."""
        return self._received, self.info.size if self.info else 0

    @property
    def granted(self) -> int:
        """The credit limit granted so far (absolute byte offset)."""
        return self._granted

    @property
    def finished(self) -> bool:
        return self.state in (RecvState.DONE, RecvState.FAILED)

    def expects(self, offset: int, nbytes: int) -> bool:
        """Whether ``nbytes`` at ``offset`` is the next chunk and fits (a placement hint)."""
        info = self.info
        return (self.state is RecvState.RECEIVING and self.sink is not None
                and offset == self._received and 0 < nbytes <= info.chunk_size
                and offset + nbytes <= min(info.size, self._granted))

    def frames_to_send(self) -> list[OutFrame]:
        """CREDIT / RESET frames queued for the sender (the queue is emptied)."""
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------ frames in
    def receive(self, frame: Any) -> Event | None:
        """Consume one frame from the sender; return an event when the stream changes state."""
        if self.finished:
            return None  # chunks still in flight after a RESET, or a late duplicate
        try:
            ftype = frame.type
            if ftype == FrameType.STREAM_RESET:
                return self._reset_by_peer(frame.headers)
            if self.state is RecvState.WAIT_OPEN:
                if ftype != FrameType.STREAM_OPEN:
                    raise StreamProtocolError(f"{ftype!r} before STREAM_OPEN", self.stream_id)
                return self._open(frame.headers)
            if ftype == FrameType.STREAM_DATA:
                return self._data(frame.headers, frame.payload,
                                  getattr(frame, "payload_crc", None))
            if ftype == FrameType.STREAM_END:
                return self._end(frame.headers)
            raise StreamProtocolError(f"unexpected {ftype!r} on an open stream", self.stream_id)
        except StreamError as exc:
            return self._fail(exc, _CODES.get(type(exc), RESET_PROTOCOL))

    def _open(self, h: Any) -> Event:
        sid = int_header(h, K_ID, 0, MAX_ID, self.stream_id)
        if self.stream_id is not None and sid != self.stream_id:
            raise StreamProtocolError(f"OPEN for stream {sid}, expected {self.stream_id}", sid)
        self.stream_id = sid
        size = int_header(h, K_SIZE, 0, MAX_SIZE, sid)
        chunk = int_header(h, K_CHUNK, 1, 2**32, sid)
        credit = int_header(h, K_CREDIT, 0, MAX_SIZE, sid)
        crc = int_header(h, K_CRC, 0, 2**32 - 1, sid) if K_CRC in h else None
        msg = h.get(K_MSG, {})
        if not isinstance(msg, dict):
            raise StreamProtocolError(f"stream {sid}: message headers are not a map", sid)
        if size > self.max_size:
            raise StreamLimitError(
                f"stream {sid} declares {size} bytes, the limit is {self.max_size}", sid)
        if chunk > self.max_chunk:
            raise StreamLimitError(
                f"stream {sid} chunk size {chunk} is over the limit {self.max_chunk}", sid)
        self.window = chunk * self.window_chunks
        if credit > self.window:
            raise StreamLimitError(f"stream {sid} assumes {credit} bytes of initial credit, "
                                   f"the window is {self.window}", sid)
        self.info = StreamInfo(sid, size, chunk, msg, bool(h.get(K_PACK, False)), crc)
        self._granted = credit
        self.state = RecvState.RECEIVING
        try:
            self.sink.open(self.info)
        except StreamError:
            raise
        except Exception as exc:
            raise StreamLimitError(f"stream {sid}: the sink refused it: {exc}", sid) from exc
        self._maybe_grant()
        return StreamOpened(self.info)

    def _data(self, h: Any, payload: Any, frame_crc: int | None = None) -> Event | None:
        sid, info = self.stream_id, self.info
        off = int_header(h, K_OFF, 0, MAX_SIZE, sid)
        want = int_header(h, K_CRC, 0, 2**32 - 1, sid)
        views = payload_views(payload)
        n = sum(v.nbytes for v in views)
        if off != self._received:
            raise StreamProtocolError(f"stream {sid}: chunk at {off}, expected {self._received}",
                                      sid)
        if not 0 < n <= info.chunk_size or off + n > info.size:
            raise StreamProtocolError(f"stream {sid}: chunk of {n} bytes at {off} does not fit "
                                      f"(chunk size {info.chunk_size}, size {info.size})", sid)
        if off + n > self._granted:
            raise StreamProtocolError(f"stream {sid}: chunk ends at {off + n}, beyond the "
                                      f"credit granted ({self._granted})", sid)
        checked = type(frame_crc) is int and len(views) == 1
        if checked and frame_crc != want:  # the decoder computed it: refuse before storing
            raise StreamCorruptError(f"stream {sid}: chunk at {off} has CRC32C "
                                     f"{frame_crc:#010x}, its header says {want:#010x}", sid)
        crc, pos = want, off
        try:
            if checked:
                self.sink.write_checked(off, views[0], want)
            else:
                crc = 0
                for v in views:
                    crc = crc32c_combine(crc, self.sink.write(pos, v), v.nbytes)
                    pos += v.nbytes
        except StreamError:
            raise
        except Exception as exc:
            return self._fail(StreamError(f"stream {sid}: the sink failed: {exc}", sid),
                              RESET_ABORTED)
        if crc != want:
            raise StreamCorruptError(f"stream {sid}: chunk at {off} has CRC32C {crc:#010x}, "
                                     f"its header says {want:#010x}", sid)
        self._crc = crc32c_combine(self._crc, crc, n)
        self._received += n
        if self._on_progress is not None:
            self._on_progress(self._received, info.size)
        self._maybe_grant()
        return None

    def update_credit(self) -> None:
        """Re-grant credit after a sink that holds data (``pending``) released some."""
        if self.state is RecvState.RECEIVING:
            self._maybe_grant()

    def _maybe_grant(self) -> None:
        size = self.info.size
        held = getattr(self.sink, "pending", 0)
        new = min(size, self._received - held + self.window)
        if new <= self._granted:
            return
        left = size - self._received
        stalled = self._granted - self._received < min(self.info.chunk_size, left)
        if stalled or new - self._granted >= self.window // 4:
            self._granted = new
            self._out.append(credit_frame(self.stream_id, new))

    def _end(self, h: Any) -> Event:
        sid, info = self.stream_id, self.info
        crc = int_header(h, K_CRC, 0, 2**32 - 1, sid)
        if self._received != info.size:
            raise StreamProtocolError(
                f"stream {sid}: END after {self._received} of {info.size} bytes", sid)
        if crc != self._crc or (info.payload_crc is not None and info.payload_crc != self._crc):
            raise StreamCorruptError(f"stream {sid}: payload CRC32C {self._crc:#010x} does not "
                                     f"match the sender's", sid)
        sink, self.sink = self.sink, None
        try:
            self.result = sink.finish()
        except Exception as exc:
            self.sink = sink
            err = exc if isinstance(exc, StreamError) else StreamCorruptError(
                f"stream {sid}: the payload did not decode: {exc}", sid)
            return self._fail(err, RESET_CORRUPT)
        self.state = RecvState.DONE
        return StreamCompleted(info, self.result)

    def _reset_by_peer(self, h: Any) -> Event:
        code, reason = reset_text(h)
        err = StreamResetError(f"stream {self.stream_id} reset by the sender ({code}): {reason}",
                               self.stream_id, reason)
        return self._fail(err, None)

    def _fail(self, error: StreamError, code: str | None) -> Event:
        self._discard()
        self.state = RecvState.FAILED
        self.error = error
        self._out.clear()  # credit grants are moot now
        if code is not None and self.stream_id is not None:
            self._out.append(reset_frame(self.stream_id, code, str(error)))
        return StreamFailed(self.stream_id if self.stream_id is not None else -1, error)

    def _discard(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.abort()

    # ------------------------------------------------------------ local actions
    def cancel(self, reason: str = "cancelled") -> OutFrame | None:
        """Refuse the rest of the stream; the RESET frame to send (None if already over)."""
        if self.finished:
            return None
        err = StreamCancelledError(f"stream {self.stream_id} cancelled: {reason}", self.stream_id)
        self._fail(err, None)
        return reset_frame(self.stream_id, RESET_CANCEL, reason) \
            if self.stream_id is not None else None

    def abort(self, reason: str = "link lost") -> StreamFailed | None:
        """The link is gone: free the sink's memory, no frame to send."""
        if self.finished:
            return None
        err = StreamCancelledError(f"stream {self.stream_id} aborted: {reason}", self.stream_id)
        ev = self._fail(err, None)
        return ev if isinstance(ev, StreamFailed) else None

    def __repr__(self) -> str:
        got, total = self.progress
        return f"StreamReceiver(id={self.stream_id}, {self.state.value}, {got}/{total} bytes)"
