"""Cell: a node of the cell network -- links to peers, routing, request/reply, bulk send, stats.

Theory of operation
-------------------
A :class:`Cell` is an async context manager that owns one trio nursery.  Each
peer connection is a :class:`~cellnet.link.Link` (any ``trio.abc.Stream``)
added with :meth:`Cell.add_link`; the links' names are the routing table, and
:func:`cellnet.routing.next_hop` (a pure function) picks the link a message
leaves through.  Every message carries its origin, destination and a hop count;
a cell that is not the destination forwards the frame as received -- headers
updated, payload bytes untouched and undecoded -- and drops a message that
reached ``max_hops``, answering a request with an error reply.

Requests originated here are tracked in a sans-IO
:class:`~cellnet.requests.RequestTable`; the waiting task sleeps on a
``trio.Event`` that the reply, a failing link or the cell's one request timer
(a task sleeping until the earliest deadline) sets, so every timeout runs on
trio's clock.  Each incoming request runs in its own task; fire-and-forget
messages go through one queue and are handled in arrival order.  Replies carry
a cell-level return code (``CellReturnCode``); :meth:`Cell.send_to_cell` maps
them to the reference codes through ``RC_TABLE``.

Bulk fire-and-forget messages are gathered per next hop and sent as one BATCH
frame when ``bulk_max_bytes`` is reached or ``bulk_interval`` seconds after
the first one, whichever comes first; a link writes frames in the order they
were queued, so bulk messages arrive in order.

A message whose payload exceeds ``LinkConfig.stream_threshold`` travels as a
chunked, credit flow-controlled stream that interleaves with small frames and
is reassembled into an ordinary Message on arrival (see
:mod:`cellnet._streaming`).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import trio
import trio.testing

from cellnet import fqcn as _fqcn
from cellnet._delivery import _UNKNOWN, Delivery, _as_message, _Batch, _name
from cellnet._handlers import Handler
from cellnet._stream_cell import StreamEndpoints
from cellnet._streaming import LinkStreams
from cellnet.defs import CellReturnCode
from cellnet.errors import (
    LimitExceededError,
    LinkBusyError,
    LinkClosedError,
)
from cellnet.link import Link, LinkConfig
from cellnet.message import Message, MessageHeaderKey, MessageType
from cellnet.requests import (
    REASON,
    Reason,
    RequestTable,
    error_reply,
    timeout_reply,
    to_reference_reply,
)
from cellnet.routing import MAX_HOPS
from cellnet.stats import CellStatistics, StatsRecorder, payload_nbytes
from cellnet.wire.codec import encode_message, encode_small_message

__all__ = ["Cell", "connect_in_process"]

log = logging.getLogger("cellnet.cell")
K = MessageHeaderKey
_OK = CellReturnCode.OK.value
_COMM = CellReturnCode.COMM_ERROR.value
_CHANNEL, _TOPIC, _MSG_TYPE = K.CHANNEL.value, K.TOPIC.value, K.MSG_TYPE.value
_ORIGIN, _DESTINATION, _HOP_COUNT = K.ORIGIN.value, K.DESTINATION.value, K.HOP_COUNT.value
_OPTIONAL, _REQ_ID, _RETURN_CODE = K.OPTIONAL.value, K.REQ_ID.value, K.RETURN_CODE.value
_REQUEST, _FNF = MessageType.REQUEST.value, MessageType.FIRE_AND_FORGET.value


def _targets(targets: str | Iterable[str]) -> list[str]:
    """Validated targets without duplicates, in the given order."""
    if isinstance(targets, str):
        return [_fqcn.validate(targets)]
    out = [_fqcn.validate(t) for t in targets]
    return list(dict.fromkeys(out))


class Cell(StreamEndpoints, Delivery):
    """A node of the cell network; use as ``async with Cell("site-1") as cell:``.

    ``parent`` overrides the tree parent derived from the name (e.g. an agent
    attached to a site).  ``send_timeout`` bounds how long fire-and-forget
    sends, replies and relays wait for room on a full link.
    """

    def __init__(
        self,
        fqcn: str,
        *,
        parent: str | None = None,
        link_config: LinkConfig | None = None,
        max_pending: int = 100_000,
        max_hops: int = MAX_HOPS,
        bulk_interval: float = 0.005,
        bulk_max_bytes: int = 256 * 1024,
        send_timeout: float = 30.0,
        fnf_queue: int = 4096,
    ) -> None:
        self.fqcn = _fqcn.validate(fqcn)
        self.parent = _fqcn.validate(parent) if parent is not None else None
        if link_config is not None and not isinstance(link_config, LinkConfig):
            raise TypeError("link_config must be a LinkConfig")
        self.link_config = link_config if link_config is not None else LinkConfig()
        self._limits = self.link_config.limits
        for name, value in (("max_hops", max_hops), ("bulk_max_bytes", bulk_max_bytes)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, value in (("bulk_interval", bulk_interval), ("send_timeout", send_timeout)):
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self.max_hops = max_hops
        self.bulk_interval = bulk_interval
        self.bulk_max_bytes = bulk_max_bytes
        self.send_timeout = send_timeout
        if type(fnf_queue) is not int or fnf_queue < 1:
            raise ValueError(f"fnf_queue must be a positive int, got {fnf_queue!r}")
        self._fnf_queue = fnf_queue
        self._fnf: deque[Message] = deque()
        self._fnf_ready = trio.lowlevel.ParkingLot()
        self._fnf_space = trio.lowlevel.ParkingLot()
        self._links: dict[str, Link] = {}
        self._routes: dict[str, str | None] = {}
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._requests = RequestTable(max_pending)
        self._stats = StatsRecorder()
        self._bulk: dict[str, _Batch] = {}
        self._serving = 0  # requests being served by handler tasks
        self._idle_servers: list = []  # parked server tasks (see Delivery._dispatch)
        self._timer = trio.CancelScope()  # the request timer's sleep (see Delivery)
        self._timer_at = math.inf  # its deadline
        self._now: Callable[[], float] = trio.current_time  # the run's clock, once running
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None

    def __repr__(self) -> str:
        return f"<Cell {self.fqcn}: {len(self._links)} links, {len(self._requests)} pending>"

    # ----------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Cell:
        if self._nursery_cm is not None:
            raise RuntimeError(f"cell {self.fqcn} is already running (or has run)")
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        self._now = trio.lowlevel.current_clock().current_time  # trio.current_time, one call
        self._nursery.start_soon(self._fnf_dispatcher)
        self._nursery.start_soon(self._request_timer)
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        nursery = self._nursery
        assert nursery is not None
        if exc_info[0] is None:
            with trio.move_on_after(1.0):  # best effort: deliver what is batched
                for hop in list(self._bulk):
                    await self._flush(hop)
        self._nursery = None
        self._requests.fail_all(Reason.LINK_CLOSED, f"cell {self.fqcn} is closing")
        for link in list(self._links.values()):
            link.close(f"cell {self.fqcn} closing")
        nursery.cancel_scope.cancel()
        return await self._nursery_cm.__aexit__(*exc_info)

    def _running(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError(f"cell {self.fqcn} is not running (use 'async with cell:')")
        return self._nursery

    async def add_link(self, stream: trio.abc.Stream, peer_fqcn: str) -> Link:
        """Attach an authenticated stream to ``peer_fqcn``; a previous link to it is replaced."""
        nursery = self._running()
        peer = _fqcn.validate(peer_fqcn)
        if peer == self.fqcn:
            raise ValueError(f"cell {self.fqcn} cannot link to itself")
        link = Link(
            stream, peer, self._on_frame, on_closed=self._link_closed, config=self.link_config
        )
        # Only our ancestors (and a configured parent) relay for the whole network; any other
        # peer may only pass on messages of its own site (the one its certificate vouches for).
        if not (_fqcn.is_ancestor(peer, self.fqcn) or peer == _fqcn.tree_parent(self.fqcn)
                or peer == self.parent):
            link.origin_site = _fqcn.owner_site(peer)
        # stream ids are split by parity: the cell with the smaller name numbers its streams odd
        link.streams = streams = self._new_link_streams(link, initiator=self.fqcn < peer)
        old = self._links.get(peer)
        self._links[peer] = link
        self._routes.clear()
        if old is not None:
            old.close("replaced by a new link")
        nursery.start_soon(link.run)
        nursery.start_soon(streams.pump)
        await trio.lowlevel.checkpoint()
        return link

    def _link_closed(self, link: Link) -> None:
        if isinstance(link.streams, LinkStreams):
            link.streams.close(f"link to {link.peer} closed: {link.close_reason}")
        if self._links.get(link.peer) is link:
            del self._links[link.peer]
            self._routes.clear()
            batch = self._bulk.pop(link.peer, None)
            if batch is not None:
                self._stats.errors["bulk_dropped"] += len(batch.msgs)
        failed = self._requests.fail_via(
            link.peer, Reason.LINK_CLOSED, f"link to {link.peer} closed: {link.close_reason}"
        )
        if failed:
            self._stats.errors["link_closed"] += len(failed)

    @property
    def peers(self) -> tuple[str, ...]:
        """FQCNs of the cells this one has a live link to."""
        return tuple(sorted(self._links))

    def get_link(self, peer: str) -> Link | None:
        return self._links.get(peer)

    def statistics(self) -> CellStatistics:
        """A snapshot of this cell's traffic, latency and error counters."""
        queued = {peer: link.queued_bytes for peer, link in sorted(self._links.items())}
        return self._stats.snapshot(self.fqcn, self.peers, len(self._requests), queued)

    # ----------------------------------------------------------------- handlers
    def register_request_cb(
        self, channel: str, topic: str, handler: Callable, *, blocking: bool = False
    ) -> None:
        """Serve ``(channel, topic)`` with ``handler(message)`` (replaces a previous one).

        The handler may be async, or sync: a sync handler runs inline unless
        ``blocking=True``, then in a worker thread (``trio.to_thread``); an
        async one runs in a task of its own, or inline when its code has no
        ``await``, ``async for`` or ``async with`` (it cannot suspend).  It
        returns the reply payload, or a :class:`Message` whose headers and
        payload form the reply (``RETURN_CODE`` defaults to ``ok``).
        """
        key = (_name(channel, "channel"), _name(topic, "topic"))
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        self._handlers[key] = Handler(handler, blocking)

    async def _call(self, handler: Handler, msg: Message) -> Any:
        if handler.is_async:
            return await handler.fn(msg)
        if handler.blocking:
            return await trio.to_thread.run_sync(handler.fn, msg)
        return handler.fn(msg)

    # ----------------------------------------------------------------- sending
    async def _send_via(
        self,
        hop: str,
        msg: Message,
        timeout: float | None,
        segments: list | None = None,
        *,
        urgent: bool = False,
    ) -> None:
        """Send ``msg`` over the link to ``hop`` (or deliver it here when ``hop`` is me).

        ``segments``: ``msg`` already encoded, if it is.  ``urgent``: a lone
        latency-sensitive frame, written at once if the link is idle (see
        :meth:`Link.write_now`); others go through the link's coalescing writer."""
        if hop == self.fqcn:
            await self._accept(msg)
            return
        link = self._links.get(hop)
        if link is None:
            raise LinkClosedError(f"no link to {hop}")
        nbytes = payload_nbytes(msg.payload)  # once: decides streaming and feeds the stats
        if nbytes > link.config.stream_threshold:  # a stream of chunks (see cellnet._streaming)
            await link.streams.send(msg, timeout)  # type: ignore[union-attr]
        else:
            if segments is None:
                segments = encode_message(msg, limits=self._limits)
            if not (urgent and link.write_now(segments)):
                await link.send(segments, timeout=timeout)
        self._stats.message_out(msg.channel, nbytes)

    async def _request_timer(self) -> None:
        """Wake the requests whose timeout passed: one task and one cancel scope for all
        (``send_request`` moves the scope's deadline up when it adds an earlier one)."""
        requests = self._requests
        while True:
            with trio.CancelScope(deadline=requests.next_deadline()) as scope:
                self._timer, self._timer_at = scope, scope.deadline
                await trio.sleep_forever()
            requests.expire(trio.current_time())

    async def send_request(
        self,
        target: str,
        channel: str,
        topic: str,
        msg: Any = None,
        timeout: float = 10.0,
        *,
        optional: bool = False,
    ) -> Message:
        """Send a request and wait for its reply; never raises for delivery problems.

        The reply's ``return_code`` is ``ok`` or the cell-level error:
        ``timeout`` (no reply in ``timeout`` seconds, on trio's clock),
        ``comm_error`` (no route, link closed, hop limit), ``invalid_request``
        (no handler; ``REASON`` header ``TOPIC_UNKNOWN``) or
        ``process_exception`` (the handler raised).
        """
        if type(target) is not str or target not in self._routes:  # cached: validated before
            target = _fqcn.validate(target)
        if type(timeout) is not float or not timeout > 0:  # (fast path for the usual float)
            if not isinstance(timeout, int | float) or not timeout > 0 or math.isnan(timeout):
                raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if self._nursery is None:
            self._running()
        request = self._stamp(_REQUEST, target, channel, topic, msg, optional)
        hop = self._routes.get(target, _UNKNOWN)  # the route cache, read here: a call less
        if hop is _UNKNOWN:
            hop = self._hop(target)
        event = trio.Event()
        now = self._now()
        requests = self._requests
        pending = requests.add(target, hop, now, event.set, now + timeout)
        if now + timeout < self._timer_at:  # (the scope's deadline, kept: a property is slow)
            self._timer.deadline = self._timer_at = now + timeout  # the timer wakes sooner
        request.headers[_REQ_ID] = pending.req_id
        try:
            if hop is None:
                return error_reply(
                    request, _COMM, Reason.NO_ROUTE, f"{self.fqcn} has no route to {target}"
                )
            segments = None  # the common small request: encoded as one buffer, right here
            if msg is None or (
                type(msg) is bytes and len(msg) <= self.link_config.stream_threshold
            ):
                segments = encode_small_message(request.headers, msg, self._limits)
            try:  # alone in flight: write it now, else let the writer coalesce
                await self._send_via(hop, request, timeout, segments, urgent=len(requests) == 1)
            except LinkClosedError as exc:
                pending.complete(error_reply(request, _COMM, Reason.LINK_CLOSED, str(exc)))
            except LinkBusyError:  # no room on the link for the whole timeout
                event.set()
            pending.waiting = True
            await event.wait()
            reply = pending.reply
            if reply is None:
                reply = timeout_reply(pending, channel, topic, timeout)
            self._stats.latency.add(self._now() - pending.started)
            rc = reply.headers.get(_RETURN_CODE)
            if rc != _OK:
                self._stats.error(f"request:{rc}")
            return reply
        finally:
            self._requests.discard(pending.req_id)
            if pending.hand_back is not None:  # the reader that woke us waits for this
                pending.hand_back()

    async def broadcast_request(
        self,
        targets: str | Iterable[str],
        channel: str,
        topic: str,
        msg: Any = None,
        timeout: float = 10.0,
        *,
        optional: bool = False,
    ) -> dict[str, Message]:
        """Send one request to every target concurrently; ``{target: reply}`` for each.

        Unreachable and timed-out targets get error replies; with ``optional``
        a target no cell can route to is left out instead.
        """
        names = _targets(targets)
        _as_message(msg)
        room = self._requests.max_pending - len(self._requests)
        if len(names) > room:
            raise LimitExceededError(f"{len(names)} targets but room for {room} more requests")
        replies: dict[str, Message] = {}

        async def one(target: str) -> None:
            try:
                reply = await self.send_request(
                    target, channel, topic, msg, timeout, optional=optional
                )
            except LimitExceededError as exc:  # the table filled up meanwhile
                reply = Message(
                    {
                        K.MSG_TYPE.value: MessageType.REPLY.value,
                        K.ORIGIN.value: target,
                        K.RETURN_CODE.value: _COMM,
                        K.ERROR.value: str(exc),
                        REASON: Reason.TOO_MANY_PENDING,
                    }
                )
            if optional and reply.get_header(REASON) == Reason.NO_ROUTE:
                return
            replies[target] = reply

        async with trio.open_nursery() as nursery:
            for target in names:
                nursery.start_soon(one, target)
        return {t: replies[t] for t in names if t in replies}

    async def fire_and_forget(
        self,
        targets: str | Iterable[str],
        channel: str,
        topic: str,
        msg: Any = None,
        *,
        bulk: bool = False,
        optional: bool = False,
    ) -> dict[str, str]:
        """Send without waiting for replies; ``{target: "ok" | "comm_error"}``.

        ``ok`` means handed to the link (not that it was handled).  A full
        link is waited on for at most ``send_timeout`` seconds; then the target
        gets ``comm_error``.  With ``bulk`` messages to the same next hop go
        out together as one BATCH frame, in order.  With ``optional``
        unroutable targets are skipped silently.
        """
        if type(targets) is str and targets in self._routes:  # a known, hence valid, target
            names: Iterable[str] = (targets,)
        else:
            names = _targets(targets)
        if self._nursery is None:
            self._running()
        status: dict[str, str] = {}
        for target in names:
            out = self._stamp(_FNF, target, channel, topic, msg, optional)
            hop = self._hop(target)
            if hop is None:
                if not optional:
                    status[target] = _COMM
                    self._stats.error("no_route")
                continue
            try:
                if bulk and hop != self.fqcn:
                    await self._bulk_add(hop, out)
                else:
                    await self._send_via(hop, out, self.send_timeout)
                status[target] = _OK
            except (LinkBusyError, LinkClosedError) as exc:
                log.warning("fire-and-forget to %s failed: %s", target, exc)
                self._stats.error("link_busy" if isinstance(exc, LinkBusyError) else "link_closed")
                status[target] = _COMM
        return status

    async def send_to_cell(
        self,
        targets: str | Iterable[str],
        channel: str,
        topic: str,
        request: Any,
        timeout: float,
        bulk_send: bool = False,
        optional: bool = False,
    ) -> dict[str, Message]:
        """The reference façade: ``timeout == 0`` is fire-and-forget (returns ``{}``),
        else ``{target: reply}`` with reference return codes (``ReturnCode.OK``,
        ``COMMUNICATION_ERROR``, ``EXECUTION_EXCEPTION``, ``TOPIC_UNKNOWN``, ...)."""
        if not isinstance(timeout, int | float) or timeout < 0 or math.isnan(timeout):
            raise ValueError(f"timeout must be >= 0 seconds, got {timeout!r}")
        if timeout == 0:
            await self.fire_and_forget(
                targets, channel, topic, request, bulk=bulk_send, optional=optional
            )
            return {}
        replies = await self.broadcast_request(
            targets, channel, topic, request, timeout, optional=optional
        )
        return {t: to_reference_reply(r) for t, r in replies.items()}


async def connect_in_process(a: Cell, b: Cell) -> tuple[Link, Link]:
    """Link two running cells of this process with an in-memory stream pair (no sockets).

    The pair is ``trio.testing.lockstep_stream_pair``: it buffers nothing, so
    each link's bounded send queue is the only buffer, as over a socket.
    """
    left, right = trio.testing.lockstep_stream_pair()
    return await a.add_link(left, b.fqcn), await b.add_link(right, a.fqcn)
