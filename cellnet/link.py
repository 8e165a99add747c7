"""Link: one peer connection -- any trio Stream, a frame decoder, a coalescing writer, heartbeats.

Theory of operation
-------------------
A :class:`Link` owns one ``trio.abc.Stream`` to one peer cell (an already
authenticated TLS stream, a unix socket, or an in-memory pair) and runs three
tasks in :meth:`Link.run`:

* the **reader** feeds received bytes to a sans-IO :class:`FrameDecoder` and
  hands each frame to the owner's ``on_frame`` coroutine (PING is answered
  here; MESSAGE/BATCH and anything else go to the owner, which may raise
  :class:`RemoteProtocolError` to close the link); when handling a read woke
  a task that will write next (:meth:`Link.handoff`), the reader lets it run
  before arming its next read -- a requester given its reply hands the reader
  back itself (:meth:`Link.handback`), which costs one scheduler step, not two;
* the **writer** waits for queued frames and writes everything that is ready
  with one ``send_all`` (small segments are joined; a large payload segment is
  written as is, never copied), so 64 pipelined requests cost one write;
  a lone latency-sensitive frame on an idle link (:meth:`Link.write_now`) and
  the replies the reader produced from one read skip the writer's task hop
  when the stream can write synchronously (``TLSStream.send_segments_nowait``),
  which halves the scheduler passes of a request/reply round trip; the reply
  to a read's only frame does not even wake the writer (a wake is a scheduler
  pass), frames queued by any other task always do; replies to a long read of
  pipelined requests leave in groups of ``_FLUSH_FRAMES`` as they are made,
  so the peer works on the first ones while the rest are served;
* the **heartbeat** (optional) sends PING when nothing arrived for an interval
  and closes the link when the peer stays silent for ``idle_timeout``.  Both
  sides ping, so a link whose cells are busy with long local work stays up as
  long as their event loops run.

Backpressure: bytes queued and not yet written (including the batch being
written) are bounded by ``max_queued_bytes``.  :meth:`Link.send` waits, in
FIFO order, until a frame fits (a frame bigger than the bound is admitted
alone into an empty queue), optionally for at most ``timeout`` seconds before
raising :class:`LinkBusyError`; and once ``coalesce_below`` bytes or more are
queued it yields, so the writer works through a backlog as it grows.  A slow
receiver therefore slows its senders instead of growing their memory.

Any protocol violation, a broken stream or a silent peer closes this link
only: the reason is logged and kept in ``close_reason``, waiting senders get
:class:`LinkClosedError`, and the owner's ``on_closed`` is called once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from cellnet.errors import LinkBusyError, LinkClosedError, RemoteProtocolError
from cellnet.wire import CLOSED, NEED_DATA, Frame, FrameDecoder, FrameType, WireLimits, encode_frame
from cellnet.wire.frame import aligned_buffer

__all__ = ["Link", "LinkConfig"]

log = logging.getLogger("cellnet.link")

FrameHandler = Callable[["Link", Frame], Awaitable[None]]
#: While handling one read, the reader writes the queued frames once this many wait.
_FLUSH_FRAMES = 8
_PING = b"".join(encode_frame(FrameType.PING))
_MESSAGE, _PING_T = FrameType.MESSAGE, FrameType.PING
_PONG = b"".join(encode_frame(FrameType.PONG))


@dataclasses.dataclass(frozen=True, slots=True)
class LinkConfig:
    """Tunables of a link; the defaults suit a LAN/WAN TLS link."""

    max_queued_bytes: int = 16 * 1024 * 1024
    heartbeat_interval: float | None = 10.0
    idle_timeout: float | None = 60.0
    read_size: int = 256 * 1024
    coalesce_below: int = 64 * 1024  # segments smaller than this are joined into one write
    limits: WireLimits = dataclasses.field(default_factory=WireLimits)
    #: a message whose payload is bigger than this travels as a stream of chunks
    stream_threshold: int = 4 * 1024 * 1024
    stream_chunk: int = 1024 * 1024  # bytes per stream chunk
    stream_window: int = 8  # a stream's receive window, in chunks (credit flow control)
    max_stream_size: int = 64 << 30  # largest incoming stream accepted from the peer
    max_streams_per_peer: int = 16  # incoming streams open at once from the peer

    def __post_init__(self) -> None:
        for name in ("max_queued_bytes", "read_size", "coalesce_below", "stream_threshold",
                     "stream_chunk", "stream_window", "max_stream_size",
                     "max_streams_per_peer"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"LinkConfig.{name} must be a positive int, got {value!r}")
        for name in ("heartbeat_interval", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or not value > 0):
                raise ValueError(f"LinkConfig.{name} must be a positive number or None")
        if not isinstance(self.limits, WireLimits):
            raise TypeError("LinkConfig.limits must be WireLimits")


class Link:
    """One connection to one peer cell; see the module docstring."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        peer: str,
        on_frame: FrameHandler,
        *,
        on_closed: Callable[[Link], None] | None = None,
        config: LinkConfig | None = None,
    ) -> None:
        if not isinstance(stream, trio.abc.Stream):
            raise TypeError(f"a link needs a trio.abc.Stream, got {type(stream).__name__}")
        self.config = config if config is not None else LinkConfig()
        self.stream = stream
        self.peer = peer
        self._on_frame = on_frame
        self._on_closed = on_closed
        self._decoder = FrameDecoder(self.config.limits, allocate_payload=self._allocate_payload)
        self._queue: deque[tuple[list, int]] = deque()
        self._queued = 0
        self._has_data = trio.lowlevel.ParkingLot()
        self._space = trio.lowlevel.ParkingLot()
        self._fifo = trio.StrictFIFOLock()
        # a synchronous write path of the stream (TLSStream.send_segments_nowait), if it has one
        self._write_nowait = getattr(stream, "send_segments_nowait", None)
        self._writing = False  # the writer task is inside a send
        self._leftover = False  # a synchronous write left bytes in the stream: writer must flush
        self._reader_task: trio.lowlevel.Task | None = None
        self._defer = False  # the reader handles the first frame of a read (see _enqueue)
        self._wake_pending = False  # a frame was queued without waking the writer
        self._handoff = False  # handling this read woke a task that will write (see handoff)
        self._hold = False  # ... a requester, which hands the reader back (see handback)
        self._held: trio.lowlevel.Task | None = None  # the reader, while it waits for that
        self._cancel: trio.CancelScope | None = None
        self._closed = False
        self.close_reason: str | None = None
        #: Site every message arriving here must originate from (see Cell.add_link); None
        #: for a link to one of our own ancestors, which relays traffic from anywhere.
        self.origin_site: str | None = None
        #: the owner's per-link stream state (a Cell puts a ``cellnet._streaming.LinkStreams``)
        self.streams: object | None = None
        self.finished = trio.Event()
        self._now = trio.lowlevel.current_clock().current_time  # trio.current_time, one call
        self.last_received = self._now()
        #: the last message origin the owner found this peer may send (its check's cache)
        self.trusted_origin: str | None = None
        #: counters: frames queued, bytes written, ``send_all`` calls, frames received
        self.frames_out = 0
        self.bytes_out = 0
        self.writes = 0
        self.writer_wakeups = 0  # times the writer task woke up (each costs a scheduler pass)

    def __repr__(self) -> str:
        state = f"closed: {self.close_reason}" if self._closed else "open"
        return f"<Link to {self.peer} ({state}), {self._queued} bytes queued>"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued_bytes(self) -> int:
        """Bytes accepted by :meth:`send` and not yet fully written to the stream."""
        return self._queued

    @property
    def frames_in(self) -> int:
        return self._decoder.frames_received

    # ------------------------------------------------------------------ sending
    def _check_open(self) -> None:
        if self._closed:
            raise LinkClosedError(f"link to {self.peer} is closed ({self.close_reason})")

    def _fits(self, nbytes: int) -> bool:
        return self._queued == 0 or self._queued + nbytes <= self.config.max_queued_bytes

    def _enqueue(self, segments: list, nbytes: int) -> None:
        self._queue.append((segments, nbytes))
        self._queued += nbytes
        self.frames_out += 1
        if self._defer and trio.lowlevel.current_task() is self._reader_task:
            # the reply to a lone request, queued by the reader itself: the reader writes it
            # synchronously when the read is handled, so waking the writer would cost a
            # scheduler pass for nothing (it wakes the writer itself if it cannot write)
            self._wake_pending = True
            return
        self._has_data.unpark_all()

    def _wake_writer(self) -> None:
        self._wake_pending = False
        self._has_data.unpark_all()

    def send_nowait(self, segments: list) -> bool:
        """Queue a frame if it fits now and nobody waits before it; False otherwise."""
        self._check_open()
        return self._enqueue_nowait(segments, sum(map(len, segments)))

    def _enqueue_nowait(self, segments: list, nbytes: int) -> bool:
        if self._fifo.locked() or not self._fits(nbytes):
            return False
        self._enqueue(segments, nbytes)
        return True

    def _write_sync(self, segments: list, nbytes: int) -> bool:
        """Write ``segments`` through the stream's synchronous path; False if it cannot now."""
        try:
            complete = self._write_nowait(segments)  # type: ignore[misc]
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.close(f"stream broken: {exc!r}")
            raise LinkClosedError(f"link to {self.peer} is closed ({self.close_reason})") from exc
        self.writes += 1
        self.bytes_out += nbytes
        if not complete:
            self._leftover = True
            self._has_data.unpark_all()
        return True

    def write_now(self, segments: list) -> bool:
        """Write a small frame at once, bypassing the writer task, if the link is idle.

        For latency-sensitive frames (a lone request or reply): on an idle
        link over a stream with a synchronous write path (``TLSStream``) this
        saves the hop through the writer task.  False, having done nothing,
        when something is queued or being written, the frame is not small
        (``coalesce_below``) or the stream cannot write synchronously now; the
        caller then uses :meth:`send`.  Not a checkpoint.
        """
        if self._closed:
            self._check_open()
        if self._write_nowait is None or self._queue or self._writing or self._leftover:
            return False  # no synchronous path, or not idle
        nbytes = len(segments[0]) if len(segments) == 1 else sum(map(len, segments))
        if nbytes >= self.config.coalesce_below:
            return False
        if len(segments) > 1:  # one TLS record, not one per segment: half the crypto calls
            segments = [b"".join(segments)]
        if not self._write_sync(segments, nbytes):
            return False
        self.frames_out += 1
        return True

    def _write_queued_now(self) -> None:
        """Write what is queued at once if the writer is idle (replies made by the reader);
        what cannot be written now is left to the writer, which is woken if it was not."""
        try:
            if self._write_nowait is None or self._writing or self._leftover or self._closed:
                return
            if not self._queue or self._queued >= self.config.coalesce_below:
                return
            buffers, nbytes = self._take_batch()
            if not self._write_sync(buffers, nbytes):
                self._queue.appendleft((buffers, nbytes))
                return
            self.writes += len(buffers) - 1
            self._queued -= nbytes
            self._space.unpark_all()
        finally:
            if self._wake_pending:
                if self._queue:
                    self._wake_writer()
                else:
                    self._wake_pending = False

    async def wait_queued_below(self, nbytes: int) -> None:
        """Wait until fewer than ``nbytes`` are queued (LinkClosedError if the link closes)."""
        while self._queued >= nbytes:
            self._check_open()
            await self._space.park()
        self._check_open()

    async def send(self, segments: list, *, timeout: float | None = None) -> None:
        """Queue one encoded frame (its segments), waiting while the queue is full.

        Frames are written in the order their ``send`` calls began.  Once
        ``coalesce_below`` bytes or more are queued, it yields (without
        raising ``Cancelled``: the frame is queued either way), so a task that
        sends in a loop lets the writer work through the backlog as it grows
        instead of only when the queue is full.  Raises
        :class:`LinkBusyError` after ``timeout`` seconds without room and
        :class:`LinkClosedError` if the link is or becomes closed.  The
        segments must not change until written.
        """
        self._check_open()
        nbytes = sum(map(len, segments))
        if self._enqueue_nowait(segments, nbytes):
            if self._queued >= self.config.coalesce_below:
                # a backlog: let the writer start on it now, not once the queue is full
                await trio.lowlevel.cancel_shielded_checkpoint()
            return
        with trio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
            async with self._fifo:
                while not self._fits(nbytes):
                    self._check_open()
                    await self._space.park()
                self._check_open()
                self._enqueue(segments, nbytes)
                return
        if scope.cancelled_caught:
            raise LinkBusyError(
                f"link to {self.peer}: {self._queued} bytes queued, no room for {nbytes} more "
                f"within {timeout} s (max_queued_bytes={self.config.max_queued_bytes})"
            )

    def _send_control(self, data: bytes) -> None:
        """Queue a tiny control frame, bypassing the bound (it must not wait behind data)."""
        if not self._closed:
            self._enqueue([data], len(data))

    def _take_batch(self) -> tuple[list, int]:
        """Everything queued, as buffers to write in order (small segments joined)."""
        out: list = []
        small: list = []
        total = 0
        limit = self.config.coalesce_below
        while self._queue:
            segments, nbytes = self._queue.popleft()
            total += nbytes
            for seg in segments:
                if len(seg) < limit:
                    small.append(seg)
                    continue
                if small:
                    out.append(b"".join(small))
                    small = []
                out.append(seg)
        if small:
            out.append(b"".join(small))
        return out, total

    # ------------------------------------------------------------------ tasks
    async def _writer(self) -> str:
        while True:
            if not self._queue:
                if self._leftover:  # a synchronous write left ciphertext in the stream
                    self._leftover = False
                    self._writing = True
                    await self.stream.send_all(b"")
                    self._writing = False
                    continue
                await self._has_data.park()
                self.writer_wakeups += 1
                continue
            buffers, nbytes = self._take_batch()
            self._writing = True
            for buf in buffers:
                await self.stream.send_all(buf)
            self._writing = False
            self.writes += len(buffers)
            self.bytes_out += nbytes
            self._queued -= nbytes
            self._space.unpark_all()

    def _allocate_payload(self, ftype: FrameType, flags: object, headers: dict, nbytes: int):
        """The decoder's buffer for a large payload: the owner's streams may place it."""
        allocate = getattr(self.streams, "allocate_payload", None)
        if allocate is not None:
            return allocate(ftype, flags, headers, nbytes)
        return aligned_buffer(nbytes)

    async def _reader(self) -> str:
        decoder = self._decoder
        next_frame = decoder.next_frame
        on_frame = self._on_frame
        now = self._now
        read_size = self.config.read_size
        receive_some = self.stream.receive_some
        receive_into = getattr(self.stream, "receive_into", None)
        lone_writes = self._write_nowait is not None  # a lone message's reply may skip the writer
        self._reader_task = trio.lowlevel.current_task()
        try:
            while True:
                # inside a large payload, a stream that can decrypts straight into its buffer
                into = decoder.get_buffer() if receive_into is not None else None
                if into is not None and into.nbytes:
                    n = await receive_into(into)
                    self.last_received = now()
                    if n:
                        decoder.buffer_updated(n)
                    else:
                        decoder.receive_data(b"")
                else:
                    data = await receive_some(read_size)
                    self.last_received = now()
                    decoder.receive_data(data)
                first = True
                while True:
                    frame = next_frame()
                    if frame is NEED_DATA:
                        if self._queue or self._wake_pending:
                            self._write_queued_now()  # e.g. the replies of inline-served requests
                        if self._hold:  # a requester runs first and then hands back
                            self._hold = self._handoff = False
                            await self._wait_handback()
                        elif self._handoff:
                            self._handoff = False
                            # the woken task runs first (its step is the round trip's critical
                            # path); two yields: trio may run a batch in either order
                            await trio.lowlevel.cancel_shielded_checkpoint()
                            await trio.lowlevel.cancel_shielded_checkpoint()
                        break
                    if self._wake_pending:  # more than one frame in this read: the writer
                        self._wake_writer()  # coalesces their replies as usual
                    if frame is CLOSED:
                        return "peer closed the stream"
                    ftype = frame.type
                    if ftype is _MESSAGE:
                        if first and lone_writes:
                            # a lone message's reply may skip the writer (see _enqueue); what
                            # is queued by then is written or handed to the writer at NEED_DATA
                            self._defer = True
                            try:
                                await on_frame(self, frame)
                            finally:
                                self._defer = False
                        else:
                            await on_frame(self, frame)
                    elif ftype is _PING_T:
                        self._send_control(_PONG)
                    elif ftype is FrameType.GOAWAY:
                        return f"peer said goodbye: {frame.headers.get('reason', 'no reason')}"
                    elif ftype is not FrameType.PONG:  # a PONG only proves the peer is alive
                        await on_frame(self, frame)
                    if len(self._queue) >= _FLUSH_FRAMES:
                        # requests served inline from a long read: their replies leave in
                        # groups, so the peer works on the first while we serve the rest
                        self._write_queued_now()
                    first = False
        finally:
            if self._wake_pending:
                self._wake_writer()

    def handoff(self) -> None:
        """From ``on_frame``: handling the frame woke a task that is about to write (a
        requester got its reply, a server task got a request).  The reader lets it run
        before arming its next read, which takes that re-arm (a syscall and a scheduler
        pass) off the request/reply critical path."""
        self._handoff = True

    def handback(self) -> Callable[[], None]:
        """From ``on_frame``: handling the frame woke a requester that is about to write
        its next request (or return), and that calls the function this returns when it
        does.  The reader waits for that call before arming its next read: the same
        effect as :meth:`handoff`, in one scheduler step instead of two yields."""
        self._hold = True
        return self._hand_back

    async def _wait_handback(self) -> None:
        self._held = self._reader_task

        def abort(_: object) -> trio.lowlevel.Abort:
            self._held = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _hand_back(self) -> None:
        task, self._held = self._held, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def lone_frame(self) -> bool:
        """From ``on_frame``: the frame being handled was the only one of its read (nothing
        else is buffered), so its reply may be written at once (:meth:`write_now`)."""
        return self._defer and self._decoder.buffered_bytes == 0

    async def _heartbeat(self) -> str:
        interval = self.config.heartbeat_interval
        idle = self.config.idle_timeout
        while True:
            await trio.sleep(interval)
            silent = trio.current_time() - self.last_received
            if idle is not None and silent >= idle:
                return f"peer silent for {silent:.1f} s (idle_timeout={idle} s)"
            if silent >= interval:
                self._send_control(_PING)

    async def _guard(self, task: Callable[[], Awaitable[str]]) -> None:
        try:
            reason = await task()
        except RemoteProtocolError as exc:
            reason = f"protocol error from peer: {exc}"
            log.warning("closing link to %s: %s", self.peer, reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            reason = f"stream broken: {exc!r}"
        self.close(reason)

    async def run(self) -> None:
        """Run the link until it closes; always closes the stream and calls ``on_closed``."""
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                if self._closed:
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._guard, self._reader)
                nursery.start_soon(self._guard, self._writer)
                if self.config.heartbeat_interval is not None:
                    nursery.start_soon(self._guard, self._heartbeat)
        finally:
            self.close(self.close_reason or "cancelled")
            await trio.aclose_forcefully(self.stream)
            self.finished.set()
            if self._on_closed is not None:
                self._on_closed(self)

    def close(self, reason: str = "closed by this side") -> None:
        """Close the link (idempotent): stop its tasks and fail waiting senders."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        log.info("link to %s closed: %s", self.peer, reason)
        if self._cancel is not None:
            self._cancel.cancel()
        self._space.unpark_all()
        self._has_data.unpark_all()

    async def goodbye(self, reason: str = "closing") -> None:
        """Tell the peer we are leaving (GOAWAY), give the writer a moment, then close."""
        if self._closed:
            return
        self._send_control(b"".join(encode_frame(FrameType.GOAWAY, {"reason": reason})))
        with trio.move_on_after(1.0):
            while self._queued and not self._closed:
                await self._space.park()
        self.close(reason)
        await self.finished.wait()
