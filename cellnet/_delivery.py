"""The delivery half of a Cell: bulk batching, accepting, relaying and serving messages.

:class:`Delivery` is a mixin of :class:`cellnet.cell.Cell` (split out to keep
modules small; running handlers lives in :mod:`cellnet._serving`); it uses the
cell's links, handlers, request table and stats.
A relayed MESSAGE frame keeps its payload bytes as received: only the headers
(hop count, previous hop) are re-encoded, so tensors are never decoded on the
way.  Bulk messages to one next hop are gathered in a ``_Batch`` and leave as
one BATCH frame, flushed by size (by the sender, which thus feels backpressure)
or by a timer ``bulk_interval`` after the first message.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import trio

from cellnet._serving import Serving, _Slot
from cellnet._streaming import STREAM_TYPES, is_large
from cellnet.defs import CellReturnCode
from cellnet.errors import (
    CellnetError,
    FQCNError,
    LinkBusyError,
    LinkClosedError,
    LocalProtocolError,
    RemoteProtocolError,
    RouteError,
)
from cellnet.fqcn import owner_site
from cellnet.link import Link
from cellnet.message import Message, MessageHeaderKey, MessageType
from cellnet.requests import Reason, error_reply
from cellnet.routing import next_hop
from cellnet.stats import payload_nbytes
from cellnet.wire import Frame, FrameFlags, FrameType, decode_batch, decode_message, encode_frame
from cellnet.wire.codec import encode_batch, encode_message

__all__ = ["Delivery"]

log = logging.getLogger("cellnet.cell")
K = MessageHeaderKey
_COMM = CellReturnCode.COMM_ERROR.value
_BATCH_ITEM_OVERHEAD = 96  # rough CBOR bytes of one batched message's headers
_MSG_TYPE, _CHANNEL, _TOPIC = K.MSG_TYPE.value, K.CHANNEL.value, K.TOPIC.value
_DESTINATION, _HOP_COUNT = K.DESTINATION.value, K.HOP_COUNT.value
_ORIGIN, _OPTIONAL, _FROM_CELL = K.ORIGIN.value, K.OPTIONAL.value, K.FROM_CELL.value
_REQUEST, _REPLY = MessageType.REQUEST.value, MessageType.REPLY.value
_FNF = MessageType.FIRE_AND_FORGET.value
_MESSAGE_FRAME, _PLAIN = FrameType.MESSAGE, FrameFlags.NONE


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty str, got {value!r}")
    return value


def _as_message(msg: Any) -> Message:
    return msg if isinstance(msg, Message) else Message(None, msg)


_UNKNOWN = object()
_MAX_ROUTES = 4096


class _Batch:
    """Bulk messages waiting for one next hop, with their traffic counts for the stats."""

    __slots__ = ("channel", "count", "msgs", "nbytes", "other", "size")

    def __init__(self, channel: Any) -> None:
        self.msgs: list[Message] = []
        self.nbytes = 0  # estimated frame bytes (flush threshold)
        self.channel = channel  # the first message's channel: counted without a dict
        self.count = 0
        self.size = 0
        self.other: dict[Any, list[int]] | None = None  # other channel -> [messages, bytes]

    def traffic(self) -> list[tuple[Any, int, int]]:
        """``(channel, messages, payload bytes)`` of everything in the batch."""
        rows = [(self.channel, self.count, self.size)]
        if self.other:
            rows.extend((ch, n, size) for ch, (n, size) in self.other.items())
        return rows


class Delivery(Serving):
    """Mixin: what a cell does with messages after routing picked a hop (see module doc)."""

    fqcn: str
    parent: str | None
    max_hops: int
    bulk_interval: float
    bulk_max_bytes: int
    send_timeout: float
    link_config: Any
    _links: dict[str, Link]
    _routes: dict[str, str | None]
    _bulk: dict[str, _Batch]
    _handlers: dict
    _requests: Any
    _stats: Any
    _limits: Any
    _fnf: deque
    _fnf_queue: int
    _fnf_ready: trio.lowlevel.ParkingLot
    _fnf_space: trio.lowlevel.ParkingLot
    _serving: int
    _idle_servers: list[_Slot]

    # ----------------------------------------------------------------- routing, stamping
    def _hop(self, target: str) -> str | None:
        """The next hop toward ``target`` (cached until a link comes or goes)."""
        routes = self._routes
        hop = routes.get(target, _UNKNOWN)
        if hop is _UNKNOWN:
            hop = next_hop(self.fqcn, target, self._links, parent=self.parent)
            if len(routes) >= _MAX_ROUTES:
                routes.clear()
            routes[target] = hop
        return hop  # type: ignore[return-value]

    def _stamp(
        self, kind: str, target: str, channel: str, topic: str, msg: Any, optional: bool
    ) -> Message:
        """A message to send: the caller's headers and payload plus the routing headers.

        ``kind`` is a ``MessageType`` value (a plain str: cheaper to set)."""
        if type(channel) is not str or not channel:
            _name(channel, "channel")
        if type(topic) is not str or not topic:
            _name(topic, "topic")
        if msg is None or type(msg) is bytes:  # no caller headers: one literal
            headers: dict[str, Any] = {
                _CHANNEL: channel, _TOPIC: topic, _MSG_TYPE: kind, _ORIGIN: self.fqcn,
                _DESTINATION: target, _HOP_COUNT: 0,
            }
            if optional:
                headers[_OPTIONAL] = True
            return Message._from_wire(headers, msg)
        if type(msg) is Message:
            headers = dict(msg.headers)
            payload = msg.payload
        else:
            base = _as_message(msg)  # validates the payload (or a Message subclass's parts)
            headers = dict(base.headers)
            payload = base.payload
        headers[_CHANNEL] = channel
        headers[_TOPIC] = topic
        headers[_MSG_TYPE] = kind
        headers[_ORIGIN] = self.fqcn
        headers[_DESTINATION] = target
        headers[_HOP_COUNT] = 0
        if optional:
            headers[_OPTIONAL] = True
        return Message._from_wire(headers, payload)

    # ----------------------------------------------------------------- bulk
    async def _bulk_add(self, hop: str, msg: Message) -> None:
        channel = msg.headers.get(_CHANNEL)
        batch = self._bulk.get(hop)
        if batch is None:
            batch = self._bulk[hop] = _Batch(channel)
            self._running().start_soon(self._flush_later, hop, batch)
        msgs = batch.msgs
        msgs.append(msg)
        payload = msg.payload
        size = len(payload) if type(payload) is bytes else payload_nbytes(payload)
        batch.nbytes += size + _BATCH_ITEM_OVERHEAD
        if channel == batch.channel:
            batch.count += 1
            batch.size += size
        else:
            other = batch.other if batch.other is not None else {}
            batch.other = other
            row = other.setdefault(channel, [0, 0])
            row[0] += 1
            row[1] += size
        if batch.nbytes >= self.bulk_max_bytes or len(msgs) >= self._limits.max_batch_count:
            await self._flush(hop)  # the sender pays for the flush: backpressure

    async def _flush_later(self, hop: str, batch: _Batch) -> None:
        await trio.sleep(self.bulk_interval)
        if self._bulk.get(hop) is batch:
            await self._flush(hop)

    async def _flush(self, hop: str) -> None:
        batch = self._bulk.pop(hop, None)
        link = self._links.get(hop)
        if batch is None or not batch.msgs:
            return
        try:
            if link is None:
                raise LinkClosedError(f"no link to {hop}")
            await link.send(
                encode_batch(batch.msgs, limits=self._limits), timeout=self.send_timeout
            )
        except (LinkBusyError, LinkClosedError, LocalProtocolError) as exc:
            log.warning("bulk send of %d messages to %s failed: %s", len(batch.msgs), hop, exc)
            self._stats.errors["bulk_dropped"] += len(batch.msgs)
            return
        for channel, count, size in batch.traffic():
            self._stats.messages_out(channel, count, size)

    # ----------------------------------------------------------------- receiving
    @staticmethod
    def _check_origin(link: Link, headers: dict) -> None:
        """Refuse a message a peer could not have originated or relayed (spoofed origin)."""
        origin = headers.get(_ORIGIN)
        try:
            ok = isinstance(origin, str) and owner_site(origin) == link.origin_site
        except FQCNError:
            ok = False
        if not ok:
            raise RemoteProtocolError(
                f"{link.peer} sent a message from {origin!r}: a peer of site "
                f"{link.origin_site} may only send its own site's messages"
            )

    async def _on_frame(self, link: Link, frame: Frame) -> None:
        if frame.type is _MESSAGE_FRAME:
            headers = frame.headers
            if link.origin_site is not None:
                origin = headers.get(_ORIGIN)
                if origin is None or origin != link.trusted_origin:
                    self._check_origin(link, headers)
                    link.trusted_origin = origin  # its next messages pass at a glance
            if headers.get(_DESTINATION) == self.fqcn:  # (_accept, without its coroutine)
                if frame.flags is _PLAIN:  # a bytes payload, as received: nothing to decode
                    msg = Message._from_wire(headers, frame.payload)
                else:
                    msg = decode_message(frame)
                if not self._take(msg, link):
                    await self._queue_fnf(msg)
            else:
                await self._relay(headers, frame, None)
        elif frame.type is FrameType.BATCH:
            msgs = decode_batch(frame)
            if link.origin_site is not None:
                for msg in msgs:
                    self._check_origin(link, msg.headers)
            await self._on_batch(msgs)
        elif frame.type in STREAM_TYPES:
            await self._on_stream_frame(link, frame)
        else:
            raise RemoteProtocolError(f"unexpected {frame.type.name} frame on a cell link")

    async def _on_stream_frame(self, link: Link, frame: Frame) -> None:
        """A stream frame: a message it completed is accepted here or relayed in a task."""
        for msg in link.streams.receive(frame):  # type: ignore[union-attr]
            headers = msg.headers
            if link.origin_site is not None:
                self._check_origin(link, headers)
            if headers.get(_DESTINATION) == self.fqcn:
                await self._accept(msg)
            else:  # no link to pass it on chunk by chunk: reassembled, relayed (or bounced)
                self._running().start_soon(self._relay_streamed, msg)

    async def _relay_streamed(self, msg: Message) -> None:
        """Relay a reassembled stream's message in a task of its own (not the reader's)."""
        try:
            await self._relay(msg.headers, None, msg)
        except CellnetError as exc:
            log.warning("relay of a streamed message failed: %s", exc)
            self._stats.error("relay_failed")

    async def _on_batch(self, msgs: list[Message]) -> None:
        """Deliver a batch's messages in order; fire-and-forget ones for an inline handler
        are handled right here (``_accept``'s fast path, inlined, traffic counted per run)."""
        me, handlers, fnf, stats = self.fqcn, self._handlers, self._fnf, self._stats
        run_channel, run_count, run_bytes = None, 0, 0  # a run of inline messages on one channel
        for msg in msgs:
            headers = msg.headers
            if headers.get(_MSG_TYPE) == _FNF and not fnf and headers.get(_DESTINATION) == me:
                channel = headers.get(_CHANNEL)
                handler = handlers.get((channel, headers.get(_TOPIC)))
                if handler is not None and handler.inline:
                    payload = msg.payload
                    size = len(payload) if type(payload) is bytes else payload_nbytes(payload)
                    if channel != run_channel:
                        if run_count:
                            stats.messages_in(run_channel, run_count, run_bytes)
                        run_channel, run_count, run_bytes = channel, 0, 0
                    run_count += 1
                    run_bytes += size
                    try:
                        handler.call(msg)
                    except Exception:
                        log.exception("fire-and-forget handler for %s/%s raised", channel,
                                      headers.get(_TOPIC))
                        stats.error("handler_exception")
                    continue
            if headers.get(_DESTINATION) != me:
                await self._relay(headers, None, msg)
            else:
                await self._accept(msg)
        if run_count:
            stats.messages_in(run_channel, run_count, run_bytes)


    async def _accept(self, msg: Message, link: Link | None = None) -> None:
        """Handle a message addressed to this cell, without a task switch when it can.

        A request for an inline handler (:mod:`cellnet._handlers`) is served
        right here, and its reply written at once on ``link`` (the link it
        arrived on, if any) when it was alone in its read, else queued; other
        requests get a server task, which the reader lets run before it reads
        on (``Link.handoff``).  A reply wakes its waiter, likewise first.  A
        fire-and-forget message for an inline handler runs here when nothing
        is queued before it (order is kept); else it is queued for the
        dispatcher task, waiting only when ``fnf_queue`` are queued.
        """
        if not self._take(msg, link):
            await self._queue_fnf(msg)

    def _take(self, msg: Message, link: Link | None) -> bool:
        """:meth:`_accept` up to its one wait: False for a fire-and-forget message that must
        be queued (:meth:`_queue_fnf`); everything else is handled here and now."""
        headers = msg.headers
        kind = headers.get(_MSG_TYPE)
        channel = headers.get(_CHANNEL)
        payload = msg.payload
        nbytes = len(payload) if type(payload) is bytes else payload_nbytes(payload)
        if kind != _REQUEST:  # (a request is counted once its reply is on its way)
            self._stats.message_in(channel, nbytes)
        if kind == _REPLY:
            req = self._requests.resolve(msg)
            if req is None:
                self._stats.error("late_reply")
            elif link is not None and req.waiting:
                # the requester runs next (it was parked on the reply, so the wake makes it
                # run and hand the reader back); the reader reads on after it
                req.hand_back = link.handback()
        elif kind == _REQUEST:
            handler = self._handlers.get((channel, headers.get(_TOPIC)))
            if handler is None or handler.inline:
                if handler is None:
                    reply, segments = self._no_handler(msg), None
                else:
                    reply, segments = self._serve_now(handler, msg)
                try:
                    if self._write_reply_now(reply, segments, link):
                        self._stats.message_out(channel, payload_nbytes(reply.payload))
                    elif not self._reply_nowait(reply, segments):
                        self._running().start_soon(self._reply, reply, segments)
                finally:
                    self._stats.message_in(channel, nbytes)
            else:
                self._stats.message_in(channel, nbytes)
                self._dispatch(msg)
                if link is not None:
                    link.handoff()
        elif kind == _FNF:
            if self._fnf:
                return False  # others wait before it: in order, behind them
            handler = self._handlers.get((channel, headers.get(_TOPIC)))
            if handler is None or not handler.inline:
                return False
            self._run_fnf_inline(handler, msg)
        else:
            raise RemoteProtocolError(f"unknown message type {kind!r}")
        return True

    async def _queue_fnf(self, msg: Message) -> None:
        """Queue a fire-and-forget message for the dispatcher, waiting while it is full."""
        queue = self._fnf
        while len(queue) >= self._fnf_queue:
            await self._fnf_space.park()
        queue.append(msg)
        if len(queue) == 1:
            self._fnf_ready.unpark_all()

    @staticmethod
    def _write_reply_now(reply: Message, segments: list | None, link: Link | None) -> bool:
        """Write an encoded reply at once on ``link``, the link its request came in on, when
        that request was the only frame of its read and the reply goes back to that link's
        peer: no reply queue, no writer task, one TLS record.  False: nothing done."""
        return (
            link is not None
            and segments is not None
            and reply.headers.get(_DESTINATION) == link.peer
            and link.lone_frame()
            and link.write_now(segments)
        )

    async def _relay(self, headers: dict, frame: Frame | None, msg: Message | None) -> None:
        """Forward a message for another cell: the frame's payload travels undecoded."""
        dest = headers.get(_DESTINATION)
        hops = headers.get(_HOP_COUNT, 0)
        if type(hops) is not int or hops < 0:
            raise RemoteProtocolError(f"bad hop count {hops!r}")
        try:
            hop = self._hop(dest) if isinstance(dest, str) else None
        except FQCNError:
            hop = None
        if hops + 1 >= self.max_hops:
            self._stats.error("hop_limit")
            await self._bounce(
                headers,
                Reason.HOP_LIMIT,
                f"{self.fqcn} dropped a message to {dest}: hop limit reached",
            )
            return
        if hop is None or hop == self.fqcn:
            if not headers.get(_OPTIONAL):
                self._stats.error("no_route")
            await self._bounce(headers, Reason.NO_ROUTE, f"{self.fqcn} has no route to {dest}")
            return
        headers[_HOP_COUNT] = hops + 1
        headers[_FROM_CELL] = self.fqcn
        self._stats.forwarded += 1
        try:
            if frame is None:
                assert msg is not None
                link = self._links.get(hop)
                if link is not None and is_large(link, msg.payload):  # a reassembled stream
                    await self._send_via(hop, msg, self.send_timeout)  # type: ignore[attr-defined]
                else:
                    await self._bulk_add(hop, msg)
                return
            body = None if frame.flags & FrameFlags.NO_PAYLOAD else frame.payload
            segments = encode_frame(
                FrameType.MESSAGE, headers, body, flags=frame.flags, limits=self._limits
            )
            await self._links[hop].send(segments, timeout=self.send_timeout)
        except (LinkBusyError, LinkClosedError, KeyError) as exc:
            await self._bounce(headers, Reason.LINK_BUSY, f"{self.fqcn} could not forward: {exc}")

    async def _bounce(self, headers: dict, reason: str, error: str) -> None:
        """Answer an undeliverable request with a ``comm_error`` reply (other kinds are dropped)."""
        if headers.get(_MSG_TYPE) != _REQUEST or _ORIGIN not in headers:
            return
        request = Message._from_wire(headers, None)
        await self._reply(error_reply(request, _COMM, reason, error))

    def _reply_nowait(self, reply: Message, segments: list | None = None) -> bool:
        """Queue a reply on its link if that needs no waiting; False: use :meth:`_reply`.

        ``segments`` is the reply already encoded (with hop count 0), if it is.
        """
        dest = reply.headers.get(_DESTINATION)
        link = self._links.get(dest) if type(dest) is str else None
        if link is None or link.closed:
            return False
        nbytes = payload_nbytes(reply.payload)  # once: decides streaming and feeds the stats
        if nbytes > link.config.stream_threshold:
            return False
        if segments is None:
            reply.headers[_HOP_COUNT] = 0
            segments = encode_message(reply, limits=self._limits)
        if not link.send_nowait(segments):
            return False
        self._stats.message_out(reply.headers.get(_CHANNEL), nbytes)
        return True

    async def _reply(
        self, reply: Message, segments: list | None = None, *, urgent: bool = False
    ) -> None:
        """Send a reply toward its destination; ``segments``: it already encoded, if it is;
        ``urgent``: write it at once if its link is idle."""
        if segments is None:
            reply.headers[_HOP_COUNT] = 0
        dest = reply.destination
        try:
            hop = self._hop(dest) if isinstance(dest, str) else None
            if hop is None:
                raise RouteError(f"{self.fqcn} has no route to {dest}")
            await self._send_via(hop, reply, self.send_timeout, segments, urgent=urgent)
        except (CellnetError, FQCNError) as exc:
            log.warning("reply to %s not sent: %s", dest, exc)
            self._stats.error("reply_lost")
