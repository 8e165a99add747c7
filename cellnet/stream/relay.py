"""StreamRelay: pass a stream's chunks from one link to the next without reassembling it.

Theory of operation.  The upstream half is a normal :class:`StreamReceiver`
(so offsets, credit, chunk CRCs and the whole CRC are all checked) whose sink
is the relay's queue: it keeps references to the received chunk views -- no
copy -- and reports them as ``pending``, so upstream credit is granted only as
chunks leave downstream.  The relay therefore holds at most one upstream
window.  The downstream half behaves like a :class:`StreamSender` with its
own stream id and its own credit from the next hop; each received piece goes
on as one DATA frame with its CRC.  A failure on either side resets the
other.  The link layer must not recycle a payload buffer the relay still
references (it is released once forwarded).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from cellnet.native import crc32c
from cellnet.stream._errors import StreamCancelledError, StreamError, StreamResetError
from cellnet.stream._proto import (
    K_CRC,
    K_ID,
    K_OFF,
    K_UPTO,
    MAX_SIZE,
    RESET_ABORTED,
    OutFrame,
    int_header,
    open_frame,
    reset_frame,
    reset_text,
)
from cellnet.stream.events import Event
from cellnet.stream.receiver import StreamReceiver
from cellnet.stream.sinks import Sink, StreamInfo
from cellnet.wire.frame import FrameType

if TYPE_CHECKING:
    from cellnet.stream.mux import StreamMux


class StreamRelay(Sink):
    """One forwarded stream; ``upstream``/``downstream`` are the faces the two muxes use."""

    def __init__(self, upstream_mux: StreamMux, upstream_id: int, downstream_id: int, *,
                 window_chunks: int, down_window_chunks: int, max_size: int, max_chunk: int):
        self._up_mux = upstream_mux
        self.rx = StreamReceiver(self, stream_id=upstream_id, max_size=max_size,
                                 max_chunk=max_chunk, window_chunks=window_chunks)
        self.stream_id = downstream_id
        self._down_chunks = down_window_chunks
        self._queue: deque[tuple[int, int, memoryview]] = deque()
        self.pending = 0
        self.max_pending = 0
        self._info: StreamInfo | None = None
        self._opened = False  # OPEN sent downstream
        self._upto = 0
        self._sent = 0
        self._end_crc: int | None = None
        self._reset_down: OutFrame | None = None
        self.done = False
        self.error: StreamError | None = None
        self.upstream = _Upstream(self)
        self.downstream = _Downstream(self)

    # ------------------------------------------------------------ Sink (upstream data)
    def open(self, info: StreamInfo) -> None:
        self._info = info
        self._upto = info.chunk_size * self._down_chunks

    def write(self, offset: int, data: memoryview) -> int:
        crc = crc32c(data)
        self.write_checked(offset, data, crc)
        return crc

    def write_checked(self, offset: int, data: memoryview, crc: int) -> None:
        self._queue.append((offset, crc, data))
        self.pending += data.nbytes
        self.max_pending = max(self.max_pending, self.pending)

    def finish(self) -> StreamRelay:
        self._end_crc = self.rx._crc  # the whole CRC the receiver just verified
        return self

    def abort(self) -> None:
        self._queue.clear()
        self.pending = 0

    # ------------------------------------------------------------ failures
    def fail_downstream(self, error: StreamError) -> None:
        """Upstream failed: drop what is queued and reset the next hop (if it saw the stream)."""
        if self.done:
            return
        self.abort()
        self.done = True
        self.error = error
        if self._opened:
            self._reset_down = reset_frame(self.stream_id, RESET_ABORTED, str(error))

    def fail_upstream(self, error: StreamError, notify: bool = True) -> None:
        """Downstream failed: reset the upstream sender and free the queue."""
        if self.done and self._reset_down is None:
            return
        self.done = True
        self.error = error
        self._reset_down = None
        frame = self.rx.cancel(str(error))
        if frame is not None and notify:
            self._up_mux.send_control(frame)
        self.abort()
        # the upstream sender may have sent its last frame already: nothing would ever
        # arrive to retire the stream, so the upstream mux forgets it now
        self._up_mux.forget_incoming(self.rx.stream_id)

    # ------------------------------------------------------------ downstream frames
    def ready(self) -> bool:
        if self._reset_down is not None:
            return True
        if self.done or self._info is None:
            return False
        if not self._opened:
            return True
        if self._queue:
            return self._sent + self._queue[0][2].nbytes <= self._upto
        return self._end_crc is not None

    def next_frame(self) -> OutFrame | None:
        if self._reset_down is not None:
            frame, self._reset_down = self._reset_down, None
            return frame
        if not self.ready():
            return None
        if not self._opened:
            self._opened = True
            info = self._info
            return open_frame(self.stream_id, info.size, info.chunk_size, self._upto,
                              info.payload_crc, info.headers, info.tensor_pack)
        if self._queue:
            off, crc, view = self._queue.popleft()
            self._sent += view.nbytes
            self.pending -= view.nbytes
            self.rx.update_credit()
            for f in self.rx.frames_to_send():
                self._up_mux.send_control(f)
            return OutFrame(FrameType.STREAM_DATA, {K_ID: self.stream_id, K_OFF: off, K_CRC: crc},
                            (view,))
        self.done = True
        return OutFrame(FrameType.STREAM_END, {K_ID: self.stream_id, K_CRC: self._end_crc})


class _Upstream:
    """The relay as an incoming stream of the upstream mux (receiver-like)."""

    def __init__(self, relay: StreamRelay):
        self.relay = relay

    @property
    def finished(self) -> bool:
        return self.relay.rx.finished

    def receive(self, frame: Any) -> Event | None:
        rx = self.relay.rx
        ev = rx.receive(frame)
        if rx.error is not None:
            self.relay.fail_downstream(rx.error)
        return ev

    def frames_to_send(self) -> list[OutFrame]:
        return self.relay.rx.frames_to_send()

    def abort(self, reason: str = "link lost") -> Event | None:
        ev = self.relay.rx.abort(reason)
        self.relay.fail_downstream(StreamCancelledError(f"upstream link lost: {reason}"))
        return ev


class _Downstream:
    """The relay as an outgoing stream of the downstream mux (sender-like)."""

    def __init__(self, relay: StreamRelay):
        self.relay = relay
        self.stream_id = relay.stream_id

    @property
    def finished(self) -> bool:
        return self.relay.done and self.relay._reset_down is None

    @property
    def error(self) -> StreamError | None:
        return self.relay.error

    def ready(self) -> bool:
        return self.relay.ready()

    def next_frame(self) -> OutFrame | None:
        return self.relay.next_frame()

    def receive(self, frame: Any) -> None:
        r = self.relay
        if frame.type == FrameType.STREAM_CREDIT:
            r._upto = max(r._upto, int_header(frame.headers, K_UPTO, 0, MAX_SIZE, r.stream_id))
        elif frame.type == FrameType.STREAM_RESET:
            code, reason = reset_text(frame.headers)
            r.fail_upstream(StreamResetError(
                f"stream {r.stream_id} reset by the next hop ({code}): {reason}",
                r.stream_id, reason))

    def cancel(self, reason: str = "link lost") -> OutFrame | None:
        self.relay.fail_upstream(StreamCancelledError(f"downstream link lost: {reason}"))
        return None
