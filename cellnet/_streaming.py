"""Large messages on a cell link: sent as a credit flow-controlled stream of chunks, not one frame.

Theory of operation.  Every link of a cell gets a :class:`LinkStreams`: a
sans-IO :class:`~cellnet.stream.StreamMux` plus one *pump* task that writes
what the mux has ready.  A message whose payload exceeds
``LinkConfig.stream_threshold`` bytes is handed to :meth:`LinkStreams.send`,
which opens an outgoing stream of ``LinkConfig.stream_chunk`` byte chunks
(the payload's buffers, or the tensor pack's segments, are sliced -- never
joined) with the message headers in the STREAM_OPEN, and waits until the END
went out (or fails with :class:`LinkClosedError` / :class:`LinkBusyError`).

The pump queues one chunk on the link only when the link's queue has drained
below a chunk, so a small frame sent meanwhile waits behind at most about
one chunk: requests and replies interleave with streams.  The mux itself
serves control frames (CREDIT, RESET) first and its streams round-robin.

Incoming STREAM_* frames go to :meth:`LinkStreams.receive`; a stream that
arrived whole (every chunk CRC and the whole-payload CRC checked) becomes an
ordinary :class:`Message`: headers from the OPEN, payload the reassembled
buffer (a tensor pack is decoded zero-copy over it).  A corrupt or refused
stream is reset alone; other traffic on the link carries on.  A link that
closes fails its streams: waiting senders get :class:`LinkClosedError`,
partly received buffers are dropped.

Zero copy on receive: the link's frame decoder asks
:meth:`LinkStreams.allocate_payload` where a large STREAM_DATA payload goes.
For the next chunk of a stream whose sink can place it (a ``BufferSink``)
that is the chunk's final spot in the reassembled payload, and the TLS engine
decrypts straight into it (``Link`` reads with ``receive_into``): a chunk is
copied once -- by the decryption -- and checksummed once.  On send, a chunk's
CRC is computed once and serves as the frame's payload CRC too.

Limits (``LinkConfig``): ``stream_chunk`` bytes per chunk, a receive window
of ``stream_window`` chunks per stream (the credit that bounds what is in
flight, and so how long a small frame can wait behind a stream),
``max_stream_size`` and ``max_streams_per_peer`` for incoming streams; an
OPEN over a limit is answered with a RESET naming it, which the sender sees
as a failed send, and nothing else on the link is touched.

Where an incoming stream goes is the owner's choice (``sink_factory``, e.g.
a cell's receive-into-place registrations) and so is whether it is relayed
(``forward``): a relayed stream is passed on chunk by chunk through
:class:`~cellnet.stream.relay.StreamRelay` (at most one receive window held),
never reassembled.  Progress of an outgoing stream is reported to the
callback set with :func:`stream_progress` around the send.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import trio

from cellnet.errors import LinkBusyError, LinkClosedError, LocalProtocolError, RemoteProtocolError
from cellnet.link import Link
from cellnet.message import Message
from cellnet.stats import payload_nbytes
from cellnet.stream import (
    SendCompleted,
    SendFailed,
    StreamCompleted,
    StreamError,
    StreamFailed,
    StreamMux,
)
from cellnet.stream._proto import STREAM_TYPES
from cellnet.stream.relay import StreamRelay
from cellnet.stream.sinks import Sink, StreamInfo
from cellnet.wire.codec import _tensor_segments

__all__ = ["STREAM_TYPES", "LinkStreams", "is_large", "stream_progress"]

log = logging.getLogger("cellnet.cell")

Progress = Callable[[int, int], None]
_PROGRESS: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
    "cellnet_stream_progress", default=None)


@contextlib.contextmanager
def stream_progress(callback: Progress | None) -> Iterator[None]:
    """Report ``callback(bytes_done, bytes_total)`` for payloads streamed inside this block.

    For example ``with stream_progress(bar.update): await cell.send_request(...)``.
    Called as each chunk is handed to the link, from the link's task: keep it
    quick; an exception it raises is logged and ignored.
    """
    if callback is not None and not callable(callback):
        raise TypeError(f"progress callback must be callable, got {type(callback).__name__}")
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def _guarded(callback: Progress) -> Progress:
    def report(done: int, total: int) -> None:
        try:
            callback(done, total)
        except Exception:
            log.exception("stream progress callback failed")
    return report


def is_large(link: Link, payload: Any) -> bool:
    """True when ``payload`` must travel over ``link`` as a stream rather than one frame."""
    return payload is not None and payload_nbytes(payload) > link.config.stream_threshold


def _source(payload: Any) -> tuple[Any, bool]:
    """The buffers to stream for a payload and whether they are a tensor pack."""
    if type(payload) is not bytes and isinstance(payload, Mapping):
        return _tensor_segments(payload), True
    return payload, False


class _Waiter:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: StreamError | None = None


class LinkStreams:
    """The streams of one link: a mux, its pump task, the senders waiting for completion."""

    def __init__(
        self,
        link: Link,
        *,
        initiator: bool,
        sink_factory: Callable[[StreamInfo], Sink] | None = None,
        forward: Callable[[dict], StreamMux | None] | None = None,
        on_activity: Callable[[], None] | None = None,
    ) -> None:
        cfg = link.config
        self.link = link
        self.mux = StreamMux(initiator=initiator, chunk_size=cfg.stream_chunk,
                             window_chunks=cfg.stream_window,
                             max_incoming=cfg.max_streams_per_peer,
                             max_stream_size=cfg.max_stream_size,
                             max_chunk=max(cfg.stream_chunk, 16 << 20),
                             sink_factory=sink_factory, forward=forward)
        self._on_activity = on_activity or self.wake
        self._wake = trio.lowlevel.ParkingLot()
        self._waiting: dict[int, _Waiter] = {}
        self._closed = False
        #: incoming streams that failed (reset, corrupt, refused, link lost)
        self.failed_in = 0

    # ------------------------------------------------------------------ sending
    async def send(self, msg: Message, timeout: float | None) -> None:
        """Stream ``msg`` over the link; return once its END is queued.

        Raises :class:`LinkClosedError` if the link closes or the peer resets
        the stream, :class:`LinkBusyError` (the stream cancelled) when it is
        not through within ``timeout`` seconds.
        """
        if self._closed:
            raise LinkClosedError(f"link to {self.link.peer} is closed ({self.link.close_reason})")
        source, pack = _source(msg.payload)
        progress = _PROGRESS.get()
        try:
            tx = self.mux.send(source, headers=dict(msg.headers), tensor_pack=pack,
                               on_progress=_guarded(progress) if progress else None)
        except StreamError as exc:
            raise LocalProtocolError(f"cannot stream the payload: {exc}") from exc
        waiter = self._waiting[tx.stream_id] = _Waiter()
        self._wake.unpark_all()
        finished = False
        try:
            with trio.move_on_after(timeout if timeout is not None else float("inf")):
                await waiter.done.wait()
                finished = True
        finally:
            self._waiting.pop(tx.stream_id, None)
            if not waiter.done.is_set() and not self._closed:  # timed out or cancelled
                with contextlib.suppress(StreamError):  # it may have just finished
                    self.mux.cancel(tx.stream_id, "sender gave up")
                self._wake.unpark_all()
        if not finished:
            raise LinkBusyError(f"stream to {self.link.peer} not through within {timeout} s")
        if waiter.error is not None:
            raise LinkClosedError(f"stream to {self.link.peer} failed: {waiter.error}")

    def _settle(self, events: list) -> list[Message]:
        """Wake the senders whose streams ended; the messages of completed incoming streams."""
        out = []
        for ev in events:
            if isinstance(ev, SendCompleted | SendFailed):
                waiter = self._waiting.get(ev.stream_id)
                if waiter is not None:
                    waiter.error = ev.error if isinstance(ev, SendFailed) else None
                    waiter.done.set()
            elif isinstance(ev, StreamCompleted):
                if isinstance(ev.result, StreamRelay):  # passed on, not ours
                    continue
                out.append(Message._from_wire(dict(ev.info.headers), ev.result))
            elif isinstance(ev, StreamFailed):
                self.failed_in += 1
                log.warning("incoming stream %d from %s failed: %s", ev.stream_id,
                            self.link.peer, ev.error)
        return out

    async def pump(self) -> None:
        """Write the mux's frames while the link lives (one task per link)."""
        link, mux = self.link, self.mux
        try:
            while not self._closed:
                frame = mux.next_frame()
                self._settle(mux.poll_events())
                if frame is None:
                    await self._wake.park()
                    continue
                if mux.relayed:  # a relay on this link may have queued work for another
                    self._on_activity()
                if frame.nbytes:  # a chunk: only onto a drained queue, so small frames pass
                    await link.wait_queued_below(link.config.stream_chunk)
                await link.send(frame.encode())
        except LinkClosedError:
            return  # the link's close handler fails this link's streams

    # ------------------------------------------------------------------ receiving
    def receive(self, frame: Any) -> list[Message]:
        """Feed one STREAM_* frame; the messages it completed (usually none)."""
        try:
            events = self.mux.receive(frame)
        except StreamError as exc:  # a header the mux cannot even attribute to a stream
            raise RemoteProtocolError(f"bad {frame.type.name} frame: {exc}") from exc
        # credit arrived, a CREDIT/RESET of ours is queued, or a relayed chunk waits elsewhere
        if self.mux.relayed:
            self._on_activity()
        else:
            self._wake.unpark_all()
        return self._settle(events)

    def allocate_payload(self, ftype: Any, flags: Any, headers: dict, nbytes: int) -> Any:
        """The link decoder's hook: a stream chunk goes straight to its sink's spot."""
        return self.mux.allocate_payload(ftype, flags, headers, nbytes)

    def wake(self) -> None:
        """Let the pump look for frames again (another link's relay may have queued some)."""
        self._wake.unpark_all()

    def close(self, reason: str) -> None:
        """The link is gone: fail every stream, free partial buffers, stop the pump."""
        if self._closed:
            return
        self._closed = True
        self._settle(self.mux.close(reason))
        for waiter in self._waiting.values():  # streams the mux had already let go of
            if not waiter.done.is_set():
                waiter.error = StreamError(reason)
                waiter.done.set()
        self._wake.unpark_all()
        if self.mux.relayed:  # the other side of a relay has a RESET to send
            self._on_activity()

    def statistics(self) -> dict[str, int]:
        """Active streams and failures (for tests and stats)."""
        return {**self.mux.statistics(), "waiting_senders": len(self._waiting),
                "failed_in": self.failed_in}
