"""Sans-IO request/reply bookkeeping: request ids, the pending table, reply building.

Theory of operation.  The cell gives every request it originates a fresh id
(``REQ_ID`` header) and records a :class:`PendingRequest` holding the target,
the next hop it left through and a ``wake`` callback (the cell passes a
``trio.Event.set``; this module never imports trio).  A reply that arrives is
matched by id (:meth:`RequestTable.resolve`); a link that closes fails every
request that left through it (:meth:`RequestTable.fail_via`).  Deadlines (on
the caller's clock) sit in a heap: the caller asks for the earliest one
(:meth:`RequestTable.next_deadline`) and, when it passed, wakes the expired
waiters (:meth:`RequestTable.expire`) -- one timer for all requests, cheaper
than a cancel scope each.  Entries of requests that ended are dropped lazily
and the heap is compacted when they outnumber the live ones.  This table only
forgets what the caller discards.  Its size is bounded (``max_pending``).

The reply helpers turn whatever a handler returned into a reply
:class:`Message` and build the error replies the cell sends on its own
(missing handler, raising handler, no route, hop limit, timeout).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

from cellnet.defs import CellReturnCode, ReturnCode, to_return_code
from cellnet.errors import LimitExceededError
from cellnet.message import Message, MessageHeaderKey, MessageType

__all__ = [
    "CELL_RC",
    "REASON",
    "PendingRequest",
    "Reason",
    "RequestTable",
    "error_reply",
    "reply_from_result",
    "timeout_reply",
    "to_reference_reply",
]

K = MessageHeaderKey

#: Header on error replies that says why the cell (not the handler) answered.
REASON = "cellnet.reason"


class Reason:
    """Values of the ``REASON`` header."""

    TOPIC_UNKNOWN = "TOPIC_UNKNOWN"  # no handler for (channel, topic)
    HANDLER_EXCEPTION = "HANDLER_EXCEPTION"  # the handler raised
    NO_ROUTE = "NO_ROUTE"  # some cell on the way had no route to the target
    HOP_LIMIT = "HOP_LIMIT"  # the message ran out of hops
    TIMEOUT = "TIMEOUT"  # no reply within the timeout
    LINK_CLOSED = "LINK_CLOSED"  # the link the request left through closed
    LINK_BUSY = "LINK_BUSY"  # the send queue stayed full
    TOO_MANY_PENDING = "TOO_MANY_PENDING"  # max_pending requests were already waiting
    BAD_REPLY = "BAD_REPLY"  # the handler returned something that is not a reply


class PendingRequest:
    """One request waiting for its reply."""

    __slots__ = ("hand_back", "hop", "reply", "req_id", "started", "target", "waiting", "wake")

    def __init__(
        self, req_id: int, target: str, hop: str | None, started: float, wake: Callable[[], Any]
    ):
        self.req_id = req_id
        self.target = target
        self.hop = hop
        self.started = started
        self.wake = wake
        self.reply: Message | None = None
        #: the requester is parked on ``wake`` (so a wake surely makes it run)
        self.waiting = False
        #: set with the reply when the link's reader waits for the requester: call it once
        #: the reply is taken (``Link.handback``)
        self.hand_back: Callable[[], None] | None = None

    @property
    def done(self) -> bool:
        return self.reply is not None

    def complete(self, reply: Message) -> bool:
        """Store ``reply`` (the first one wins) and wake the waiter; False if already done."""
        if self.reply is not None:
            return False
        self.reply = reply
        self.wake()
        return True


class RequestTable:
    """Requests this cell originated that have no reply yet, by request id."""

    def __init__(self, max_pending: int = 100_000) -> None:
        if type(max_pending) is not int or max_pending < 1:
            raise ValueError(f"max_pending must be a positive int, got {max_pending!r}")
        self.max_pending = max_pending
        self._ids = itertools.count(1)
        self._pending: dict[int, PendingRequest] = {}
        self._deadlines: list[tuple[float, int]] = []  # heap of (deadline, req_id)

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, req_id: object) -> bool:
        return req_id in self._pending

    def add(
        self,
        target: str,
        hop: str | None,
        now: float,
        wake: Callable[[], Any],
        deadline: float = math.inf,
    ) -> PendingRequest:
        """Record a new request; raises :class:`LimitExceededError` when the table is full."""
        if len(self._pending) >= self.max_pending:
            raise LimitExceededError(
                f"{len(self._pending)} requests are already pending (max_pending="
                f"{self.max_pending}); wait for some replies first"
            )
        req = PendingRequest(next(self._ids), target, hop, now, wake)
        self._pending[req.req_id] = req
        if deadline < math.inf:
            heapq.heappush(self._deadlines, (deadline, req.req_id))
        return req

    def next_deadline(self) -> float:
        """The earliest deadline of a request still in the table; inf if there is none."""
        heap, pending = self._deadlines, self._pending
        while heap and heap[0][1] not in pending:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def expire(self, now: float) -> list[PendingRequest]:
        """Wake the waiters of unanswered requests whose deadline is ``<= now`` (they stay in
        the table: the waiter builds its timeout reply and discards); those requests."""
        heap, pending = self._deadlines, self._pending
        out = []
        while heap and heap[0][0] <= now:
            req = pending.get(heapq.heappop(heap)[1])
            if req is not None and req.reply is None:
                out.append(req)
                req.wake()
        return out

    def resolve(self, reply: Message) -> PendingRequest | None:
        """Complete the request ``reply`` answers; None if it is unknown or already answered."""
        req = self._pending.get(reply.req_id)
        if req is None or not req.complete(reply):
            return None
        return req

    def fail_via(self, hop: str, reason: str, error: str) -> list[PendingRequest]:
        """Fail (with ``comm_error``) every open request that left through ``hop``."""
        failed = []
        for req in self._pending.values():
            if req.hop == hop and not req.done:
                req.complete(_bare_error(req, CellReturnCode.COMM_ERROR, reason, error))
                failed.append(req)
        return failed

    def fail_all(self, reason: str, error: str) -> None:
        for req in self._pending.values():
            if not req.done:
                req.complete(_bare_error(req, CellReturnCode.COMM_ERROR, reason, error))

    def discard(self, req_id: int) -> None:
        pending = self._pending
        pending.pop(req_id, None)
        heap = self._deadlines
        if len(heap) > 2 * len(pending) + 1024:  # mostly ended requests: compact
            heap[:] = [entry for entry in heap if entry[1] in pending]
            heapq.heapify(heap)


def _bare_error(req: PendingRequest, rc: str, reason: str, error: str) -> Message:
    return Message(
        {
            K.MSG_TYPE: MessageType.REPLY.value,
            K.REQ_ID: req.req_id,
            K.ORIGIN: req.target,
            K.RETURN_CODE: str(rc),
            K.ERROR: error,
            REASON: reason,
        }
    )


def error_reply(request: Message, rc: str, reason: str, error: str) -> Message:
    """The reply a cell sends on its own when it cannot deliver or serve ``request``."""
    return request.reply(str(rc), error=error, **{REASON: reason})


def timeout_reply(req: PendingRequest, channel: Any, topic: Any, timeout: float) -> Message:
    """What ``send_request`` returns when no reply came within ``timeout`` seconds."""
    msg = _bare_error(
        req, CellReturnCode.TIMEOUT, Reason.TIMEOUT, f"no reply from {req.target} in {timeout} s"
    )
    msg.headers[K.CHANNEL] = channel
    msg.headers[K.TOPIC] = topic
    return msg


def reply_from_result(request: Message, result: Any) -> Message:
    """Turn a handler's return value into the reply to ``request``.

    A :class:`Message` keeps its headers (reserved routing headers are set by
    the cell) and its payload; its ``RETURN_CODE`` defaults to ``ok``.  Any
    other value is the payload of an ``ok`` reply (None, bytes-like or a
    mapping of arrays); a value that cannot be a payload raises ``TypeError``.
    """
    if isinstance(result, Message):
        extra = {k: v for k, v in result.headers.items() if k not in _ROUTING}
        rc = extra.pop(K.RETURN_CODE.value, CellReturnCode.OK.value)
        reply = request.reply(str(rc), result.payload)
        reply.headers.update(extra)
        return reply
    return request.reply(CellReturnCode.OK.value, result)


_ROUTING = frozenset(
    k.value
    for k in (K.MSG_TYPE, K.REQ_ID, K.ORIGIN, K.DESTINATION, K.FROM_CELL, K.TO_CELL, K.HOP_COUNT)
)


def to_reference_reply(reply: Message) -> Message:
    """A copy of a cell reply whose return code is in the reference vocabulary.

    ``ok`` becomes ``ReturnCode.OK``, cell codes map through ``RC_TABLE``
    (``timeout`` -> ``COMMUNICATION_ERROR``, ``process_exception`` ->
    ``EXECUTION_EXCEPTION``), and a reply for a missing handler becomes
    ``TOPIC_UNKNOWN``.  The cell's own code stays under ``cellnet.cell_rc``.
    """
    headers = dict(reply.headers)
    cell_rc = headers.get(K.RETURN_CODE, CellReturnCode.OK.value)
    if headers.get(REASON) == Reason.TOPIC_UNKNOWN:
        rc: str = ReturnCode.TOPIC_UNKNOWN
    else:
        rc = to_return_code(str(cell_rc))
    headers[K.RETURN_CODE.value] = str(rc)
    headers[CELL_RC] = cell_rc
    return Message._from_wire(headers, reply.payload)


#: Header holding the cell-level code on a reply converted by :func:`to_reference_reply`.
CELL_RC = "cellnet.cell_rc"
