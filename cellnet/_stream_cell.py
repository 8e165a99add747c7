"""The Cell's side of streaming: receive-into-place registrations and chunk-by-chunk relaying.

Theory of operation.  Every link of a cell gets a
:class:`~cellnet._streaming.LinkStreams` built by :meth:`StreamEndpoints._new_link_streams`
with two decisions delegated back to the cell:

* **where an incoming stream goes** (``sink_factory``): a stream addressed
  to this cell whose ``(channel, topic)`` has a registration made with
  :meth:`StreamEndpoints.register_stream_sink` goes to the sink that
  registration's factory returns -- e.g. a
  :class:`~cellnet.stream.tensor_sink.TensorAccumulatorSink` folding the
  update into a running aggregate as it arrives, or a
  :class:`~cellnet.stream.FileSink` -- and the handler of that
  ``(channel, topic)`` then receives a message whose payload is what the
  sink's ``finish`` returned.  Anything else is reassembled into one buffer
  (a tensor pack decoded zero-copy over it).
* **whether it is passed on** (``forward``): a stream for another cell is
  relayed chunk by chunk onto the link of the next hop (the same route,
  hop-count and origin rules as any relayed message), so a relay holds at
  most one receive window of it.  When there is no such link (or the hop
  limit is reached) the stream is reassembled and the ordinary relay path
  bounces it with the usual reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from cellnet._delivery import _name
from cellnet._streaming import LinkStreams
from cellnet.errors import FQCNError
from cellnet.link import Link
from cellnet.message import MessageHeaderKey as K
from cellnet.stream import BufferSink, Sink, StreamInfo, StreamMux
from cellnet.stream.pool import BufferPool

__all__ = ["ProgressSink", "StreamEndpoints"]

ReceiveProgress = Callable[[StreamInfo, int, int], None]
SinkFactory = Callable[[StreamInfo], Sink]

_DEST, _CHANNEL, _TOPIC = K.DESTINATION.value, K.CHANNEL.value, K.TOPIC.value
_HOPS, _FROM = K.HOP_COUNT.value, K.FROM_CELL.value


class ProgressSink(Sink):
    """Wraps a sink and reports ``callback(info, bytes_done, bytes_total)`` after each chunk."""

    def __init__(self, inner: Sink, callback: ReceiveProgress):
        self.inner = inner
        self._callback = callback
        self._info: StreamInfo | None = None
        self._done = 0

    @property
    def pending(self) -> int:  # type: ignore[override]
        return self.inner.pending

    def open(self, info: StreamInfo) -> None:
        self._info = info
        self.inner.open(info)

    def _report(self, n: int) -> None:
        self._done += n
        self._callback(self._info, self._done, self._info.size)

    def write(self, offset: int, data: memoryview) -> int:
        crc = self.inner.write(offset, data)
        self._report(data.nbytes)
        return crc

    def place(self, offset: int, nbytes: int) -> memoryview | None:
        return self.inner.place(offset, nbytes)

    def write_checked(self, offset: int, data: memoryview, crc: int) -> None:
        self.inner.write_checked(offset, data, crc)
        self._report(data.nbytes)

    def finish(self) -> Any:
        return self.inner.finish()

    def abort(self) -> None:
        self.inner.abort()


class StreamEndpoints:
    """Mixin for :class:`~cellnet.cell.Cell`: per-topic stream sinks and stream relaying."""

    fqcn: str
    max_hops: int
    _links: dict[str, Link]

    def _sink_table(self) -> dict[tuple[str, str], tuple[SinkFactory | None, Any]]:
        table = self.__dict__.get("_stream_sinks")
        if table is None:
            table = self.__dict__["_stream_sinks"] = {}
        return table

    def register_stream_sink(
        self,
        channel: str,
        topic: str,
        factory: SinkFactory | None = None,
        *,
        on_progress: ReceiveProgress | None = None,
    ) -> None:
        """Receive large (streamed) payloads for ``(channel, topic)`` into place.

        ``factory(info)`` returns the :class:`~cellnet.stream.Sink` a new
        incoming stream is written into (``info`` carries its size and message
        headers); the request handler of ``(channel, topic)`` then gets the
        sink's ``finish()`` result as the payload.  ``None`` keeps the default
        (one buffer).  ``on_progress(info, bytes_done, bytes_total)`` is called
        after each chunk.  A factory that raises refuses the stream (the
        sender sees a reset).  Registering again replaces the registration.
        """
        key = (_name(channel, "channel"), _name(topic, "topic"))
        if factory is not None and not callable(factory):
            raise TypeError(f"factory must be callable, got {type(factory).__name__}")
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f"on_progress must be callable, got {type(on_progress).__name__}")
        self._sink_table()[key] = (factory, on_progress)

    def unregister_stream_sink(self, channel: str, topic: str) -> None:
        """Drop the registration of ``(channel, topic)`` (streams then reassemble as usual)."""
        self._sink_table().pop((channel, topic), None)

    @property
    def stream_buffers(self) -> BufferPool:
        """The pool reassembled stream payloads come from (released big buffers are reused)."""
        pool = self.__dict__.get("_stream_pool")
        if pool is None:
            pool = self.__dict__["_stream_pool"] = BufferPool()
        return pool

    def _stream_sink(self, info: StreamInfo) -> Sink:
        h = info.headers
        entry = None
        if h.get(_DEST) == self.fqcn:
            entry = self._sink_table().get((h.get(_CHANNEL), h.get(_TOPIC)))
        if entry is None:
            return BufferSink(pool=self.stream_buffers)
        factory, on_progress = entry
        sink = factory(info) if factory is not None else BufferSink(pool=self.stream_buffers)
        if not isinstance(sink, Sink):
            raise TypeError(f"stream sink factory returned {type(sink).__name__}, not a Sink")
        return ProgressSink(sink, on_progress) if on_progress is not None else sink

    def _stream_forward(self, link: Link, headers: dict) -> StreamMux | None:
        """The mux of the next hop for a stream to another cell, or None to take it here."""
        dest = headers.get(_DEST)
        if not isinstance(dest, str) or dest == self.fqcn:
            return None
        if link.origin_site is not None:
            self._check_origin(link, headers)  # type: ignore[attr-defined]
        hops = headers.get(_HOPS, 0)
        if type(hops) is not int or hops < 0 or hops + 1 >= self.max_hops:
            return None  # reassembled, then refused by the ordinary relay path
        try:
            hop = self._hop(dest)  # type: ignore[attr-defined]
        except FQCNError:
            return None
        out = self._links.get(hop) if hop is not None and hop != link.peer else None
        if out is None or out.closed or not isinstance(out.streams, LinkStreams):
            return None
        headers[_HOPS] = hops + 1
        headers[_FROM] = self.fqcn
        self._stats.forwarded += 1  # type: ignore[attr-defined]
        return out.streams.mux

    def _wake_stream_pumps(self) -> None:
        for link in tuple(self._links.values()):
            if isinstance(link.streams, LinkStreams):
                link.streams.wake()

    def _new_link_streams(self, link: Link, *, initiator: bool) -> LinkStreams:
        return LinkStreams(link, initiator=initiator, sink_factory=self._stream_sink,
                           forward=functools.partial(self._stream_forward, link),
                           on_activity=self._wake_stream_pumps)
