"""StreamMux: one link's streams -- fair chunk scheduling, control-first interleaving, limits.

Theory of operation.  Stream ids are split by parity so the two ends never
collide: the side that opened the link (``initiator=True``) numbers its
outgoing streams 1, 3, 5, ..., the other side 2, 4, 6, ...; ids only grow.
A frame's id and type say which table it belongs to: OPEN/DATA/END come from
the peer's senders, CREDIT goes to ours, RESET to whichever side owns that id.
:meth:`next_frame` always returns a queued control frame (small messages,
CREDIT, RESET) before the next chunk, then serves the streams that have
credit round-robin, one chunk each -- so a large stream never blocks a small
message or another stream.  An OPEN over the concurrency or size limit is
answered with a RESET naming the limit; other streams carry on.  With a
``forward`` callback an incoming stream can be relayed to another mux chunk
by chunk (see :mod:`cellnet.stream.relay`).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from cellnet.stream._errors import StreamLimitError, StreamProtocolError, StreamUsageError
from cellnet.stream._proto import (
    DEFAULT_CHUNK,
    DEFAULT_WINDOW_CHUNKS,
    K_ID,
    K_MSG,
    K_OFF,
    RESET_LIMIT,
    RESET_PROTOCOL,
    STREAM_TYPES,
    TO_RECEIVER,
    reset_frame,
    stream_id_of,
)
from cellnet.stream.events import Event, SendCompleted, SendFailed, StreamFailed
from cellnet.stream.receiver import DEFAULT_MAX_CHUNK, DEFAULT_MAX_SIZE, StreamReceiver
from cellnet.stream.relay import StreamRelay
from cellnet.stream.sender import StreamSender
from cellnet.stream.sinks import BufferSink, Sink, StreamInfo
from cellnet.wire.frame import FrameType, aligned_buffer


class _LazySink(Sink):
    """Creates the real sink only once the OPEN passed every limit."""

    def __init__(self, factory: Callable[[StreamInfo], Sink]):
        self._factory = factory
        self.inner: Sink | None = None

    @property
    def pending(self) -> int:
        return self.inner.pending if self.inner is not None else 0

    def open(self, info: StreamInfo) -> None:
        self.inner = self._factory(info)
        self.inner.open(info)

    def write(self, offset: int, data: memoryview) -> int:
        return self.inner.write(offset, data)

    def place(self, offset: int, nbytes: int) -> memoryview | None:
        return self.inner.place(offset, nbytes) if self.inner is not None else None

    def write_checked(self, offset: int, data: memoryview, crc: int) -> None:
        self.inner.write_checked(offset, data, crc)

    def finish(self) -> Any:
        return self.inner.finish()

    def abort(self) -> None:
        if self.inner is not None:
            self.inner.abort()


class StreamMux:
    """Multiplexes many streams in both directions over one link (sans-IO)."""

    def __init__(
        self,
        *,
        initiator: bool,
        chunk_size: int = DEFAULT_CHUNK,
        window_chunks: int = DEFAULT_WINDOW_CHUNKS,
        max_incoming: int = 16,
        max_stream_size: int = DEFAULT_MAX_SIZE,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        sink_factory: Callable[[StreamInfo], Sink] | None = None,
        forward: Callable[[dict], StreamMux | None] | None = None,
    ):
        if type(max_incoming) is not int or max_incoming < 0:
            raise StreamUsageError(f"max_incoming must be an int >= 0, got {max_incoming!r}")
        self._next_id = 1 if initiator else 2
        self.chunk_size = chunk_size
        self.window_chunks = window_chunks
        self.max_incoming = max_incoming
        self.max_stream_size = max_stream_size
        self.max_chunk = max_chunk
        self._sink_factory = sink_factory or (lambda info: BufferSink())
        self._forward = forward
        self._control: deque[Any] = deque()
        self._out: dict[int, Any] = {}  # id -> StreamSender or relay downstream face
        self._rr: deque[int] = deque()
        self._in: dict[int, Any] = {}  # id -> StreamReceiver or relay upstream face
        self._last_in = 0
        self._events: list[Event] = []
        #: streams relayed through this mux (either side) so far
        self.relayed = 0

    # ------------------------------------------------------------ sending
    def _new_id(self) -> int:
        sid = self._next_id
        self._next_id += 2
        return sid

    def _mine(self, sid: int) -> bool:
        return sid % 2 == self._next_id % 2

    def send(self, source: Any, *, total_size: int | None = None, headers: dict | None = None,
             tensor_pack: bool = False, payload_crc: int | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> StreamSender:
        """Start an outgoing stream of ``source`` (a buffer or list of buffers)."""
        if total_size is None:
            views = source if isinstance(source, list | tuple) else [source]
            total_size = sum(memoryview(v).nbytes for v in views)
        tx = StreamSender(self._new_id(), total_size, source, chunk_size=self.chunk_size,
                          initial_credit=self.chunk_size * self.window_chunks, headers=headers,
                          tensor_pack=tensor_pack, payload_crc=payload_crc,
                          on_progress=on_progress)
        self._adopt(tx)
        return tx

    def _adopt(self, stream: Any) -> None:
        self._out[stream.stream_id] = stream
        self._rr.append(stream.stream_id)

    def send_control(self, frame: Any) -> None:
        """Queue a small frame (a message, CREDIT, RESET) to go before the next chunk."""
        self._control.append(frame)

    def cancel(self, stream_id: int, reason: str = "cancelled") -> None:
        """Cancel an outgoing or incoming stream; the peer gets a RESET."""
        s = self._out.pop(stream_id, None) or self._in.pop(stream_id, None)
        if s is None:
            raise StreamUsageError(f"no active stream {stream_id}")
        frame = s.cancel(reason)
        if frame is not None:
            self._control.append(frame)

    def next_frame(self) -> Any | None:
        """The next frame to write: control first, then one chunk of the next ready stream."""
        if self._control:
            return self._control.popleft()
        for _ in range(len(self._rr)):
            sid = self._rr[0]
            self._rr.rotate(-1)
            s = self._out.get(sid)
            if s is None or s.finished:
                self._drop_out(sid)
                continue
            if s.ready():
                frame = s.next_frame()
                if s.finished:
                    self._drop_out(sid)
                return frame
        return None

    def frames_to_send(self, max_bytes: int | None = None) -> list[Any]:
        """Ready frames for one write, up to about ``max_bytes`` of payload (None: all)."""
        out, total = [], 0
        while max_bytes is None or total < max_bytes:
            frame = self.next_frame()
            if frame is None:
                break
            out.append(frame)
            total += getattr(frame, "nbytes", 0)
        return out

    def _drop_out(self, sid: int) -> None:
        s = self._out.pop(sid, None)
        with contextlib.suppress(ValueError):
            self._rr.remove(sid)
        if s is not None and s.finished:
            if s.error is None:
                self._events.append(SendCompleted(sid))
            else:
                self._events.append(SendFailed(sid, s.error))

    # ------------------------------------------------------------ receiving
    def poll_events(self) -> list[Event]:
        """Events not yet returned (e.g. a send that completed in :meth:`next_frame`)."""
        ev, self._events = self._events, []
        return ev

    def receive(self, frame: Any) -> list[Event]:
        """Dispatch one stream frame from the peer; return the events it (and sends) caused."""
        if frame.type not in STREAM_TYPES:
            raise StreamUsageError(f"{frame.type!r} is not a stream frame")
        sid = stream_id_of(frame.headers)
        if frame.type == FrameType.STREAM_CREDIT or (
                frame.type == FrameType.STREAM_RESET and self._mine(sid)):
            s = self._out.get(sid)
            if s is not None:
                s.receive(frame)
                if s.finished:
                    self._drop_out(sid)
        elif frame.type == FrameType.STREAM_OPEN:
            self._open(sid, frame)
        elif self._mine(sid) and frame.type in TO_RECEIVER:
            self._refuse(sid, StreamProtocolError(f"{frame.type!r} for our own stream id {sid}",
                                                  sid), RESET_PROTOCOL)
        else:
            self._deliver(sid, frame)
        return self.poll_events()

    def _open(self, sid: int, frame: Any) -> None:
        if self._mine(sid) or sid <= self._last_in:
            err = StreamProtocolError(f"OPEN with id {sid} (reused or not the peer's)", sid)
            self._refuse(sid, err, RESET_PROTOCOL)
            return
        self._last_in = sid
        if len(self._in) >= self.max_incoming:
            err = StreamLimitError(f"stream {sid} refused: {len(self._in)} incoming streams "
                                   f"already (limit {self.max_incoming})", sid)
            self._refuse(sid, err, RESET_LIMIT)
            return
        kw = dict(max_size=self.max_stream_size, max_chunk=self.max_chunk)
        target = self._forward(frame.headers.get(K_MSG) or {}) if self._forward else None
        if target is not None:
            relay = StreamRelay(self, sid, target._new_id(), window_chunks=self.window_chunks,
                                down_window_chunks=target.window_chunks, **kw)
            target._adopt(relay.downstream)
            target.relayed += 1
            self.relayed += 1
            s = relay.upstream
        else:
            s = StreamReceiver(_LazySink(self._sink_factory), stream_id=sid,
                               window_chunks=self.window_chunks, **kw)
        self._in[sid] = s
        self._deliver(sid, frame)

    def forget_incoming(self, sid: int) -> None:
        """Drop incoming stream ``sid`` if it has ended (e.g. a relay whose next hop failed);
        later frames of it are dropped as those of any ended stream."""
        s = self._in.get(sid)
        if s is not None and s.finished:
            del self._in[sid]

    def _refuse(self, sid: int, err: Exception, code: str) -> None:
        self._control.append(reset_frame(sid, code, str(err)))
        self._events.append(StreamFailed(sid, err))

    def _deliver(self, sid: int, frame: Any) -> None:
        s = self._in.get(sid)
        if s is None:
            if sid > self._last_in:
                self._refuse(sid, StreamProtocolError(f"{frame.type!r} for unopened stream {sid}",
                                                      sid), RESET_PROTOCOL)
            return  # a stream that ended or was reset: late frames are dropped
        ev = s.receive(frame)
        self._control.extend(s.frames_to_send())
        if ev is not None:
            self._events.append(ev)
        if s.finished:
            del self._in[sid]

    def allocate_payload(self, ftype: Any, flags: Any, headers: dict, nbytes: int) -> Any:
        """Where the frame decoder should put a large payload (its ``allocate_payload`` hook).

        The next expected chunk of an incoming stream whose sink can
        :meth:`~Sink.place` it goes straight to its final spot; anything else
        (and every check the receiver makes later still applies) gets a
        buffer of its own.
        """
        if ftype == FrameType.STREAM_DATA and type(headers) is dict:
            s = self._in.get(headers.get(K_ID))
            off = headers.get(K_OFF)
            if type(s) is StreamReceiver and type(off) is int and s.expects(off, nbytes):
                view = s.sink.place(off, nbytes)
                if view is not None and view.nbytes == nbytes and not view.readonly:
                    return view
        return aligned_buffer(nbytes)

    # ------------------------------------------------------------ link loss
    def close(self, reason: str = "link lost") -> list[Event]:
        """The link is gone: abort every stream (memory freed), report each one."""
        for sid, s in list(self._in.items()):
            ev = s.abort(reason)
            if ev is not None:
                self._events.append(ev)
            del self._in[sid]
        for sid, s in list(self._out.items()):
            s.cancel(reason)
            self._drop_out(sid)
        self._control.clear()
        return self.poll_events()

    def statistics(self) -> dict[str, int]:
        """Counts of active streams and queued control frames."""
        return {"outgoing": len(self._out), "incoming": len(self._in),
                "control_queued": len(self._control)}
