"""Events in a job: fired and handled locally, or with ``EventScope.FEDERATION`` across sites.

Theory of operation
-------------------
Each job cell has one :class:`EventBus`.  Handlers are registered per event
type (or for every type): a component with ``handle_event(event_type,
fl_ctx)`` (the reference's shape), or a plain callable with that signature;
either may be sync or async.  :meth:`EventBus.fire_event` calls the local
handlers in registration order; a handler that raises is logged and the
others still run -- an event never fails the task flow.

:meth:`EventBus.fire_fed_event` sends the event fire-and-forget (it never
waits for the far side) to the other job cells of the job on the task
channel: from the server to the sites (all, or ``targets``), from a site to
the server.  The message carries the ``FedEventHeader`` fields (event type,
origin, targets, timestamp, direction) plus the cmi session headers, and the
event data (CBOR) as payload.  The receiving cell checks the session like
any task message, then runs its local handlers in a background task, so a
slow handler holds up neither the sender nor the receiver's message queue.
Handlers see the data under ``FLContextKey.EVENT_DATA``, the origin under
``EVENT_ORIGIN``/``EVENT_ORIGIN_SITE`` and ``EVENT_SCOPE == "federation"``.
A received event is never forwarded again, so events cannot loop.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

import cbor2
import trio

from cellnet.defs import CMIHeader, EventScope, FedEventHeader, FLContextKey
from cellnet.errors import CellnetError, JobError
from cellnet.fl.runtime import _proto as P
from cellnet.fl.runtime.context import FLContext
from cellnet.fl.runtime.messenger import JobCellMessenger, guard
from cellnet.fl.runtime.session import SERVER_CLIENT
from cellnet.message import Message

__all__ = ["ALL_EVENTS", "EVENT_TOPIC", "EventBus", "EventType"]

log = logging.getLogger("cellnet.fl.events")
#: Register a handler for every event type.
ALL_EVENTS = "*"
#: Topic of federation events on the task channel.
EVENT_TOPIC = "__fed_event__"
_OUT = "outgoing"


class EventType(StrEnum):
    """Events the runtime itself fires (locally) in every job cell."""

    START_RUN = "_start_run"
    END_RUN = "_end_run"


def _handler_fn(handler: Any) -> Callable[..., Any]:
    fn = getattr(handler, "handle_event", None)
    if fn is None and callable(handler):
        fn = handler
    if not callable(fn):
        raise TypeError(f"an event handler has handle_event(event_type, fl_ctx) or is callable; "
                        f"got {type(handler).__name__}")
    return fn


class EventBus:
    """Local and federation events of one job cell (see the module docstring)."""

    def __init__(self, engine: Any = None) -> None:
        self.engine = engine
        self._handlers: list[tuple[str, Callable[..., Any]]] = []
        self._nursery: trio.Nursery | None = None
        self.errors = 0  # handler failures (logged)

    def register(self, handler: Any, event_types: str | Iterable[str] = ALL_EVENTS) -> None:
        """Call ``handler`` for ``event_types`` (one type, a list, or ``"*"``)."""
        fn = _handler_fn(handler)
        types = [event_types] if isinstance(event_types, str) else list(event_types)
        if not types or not all(isinstance(t, str) and t for t in types):
            raise ValueError(f"event types must be non-empty strings, got {event_types!r}")
        for t in types:
            self._handlers.append((t, fn))

    # --- local ------------------------------------------------------------------------
    async def fire_event(self, event_type: str, fl_ctx: FLContext | None = None,
                         scope: EventScope = EventScope.LOCAL) -> int:
        """Run the local handlers of ``event_type``; how many ran without raising.

        Handlers get a copy of ``fl_ctx`` with ``EVENT_SCOPE`` set to ``scope``
        (the caller's context is left as it was).
        """
        if not isinstance(event_type, str) or not event_type:
            raise ValueError(f"event type must be a non-empty string, got {event_type!r}")
        ctx = fl_ctx.copy() if fl_ctx is not None else FLContext()
        ctx.set_prop(FLContextKey.EVENT_SCOPE, EventScope(scope).value, private=False)
        ok = 0
        for wanted, fn in list(self._handlers):
            if wanted not in (ALL_EVENTS, event_type):
                continue
            try:
                result = fn(event_type, ctx)
                if inspect.isawaitable(result):
                    await result
                ok += 1
            except Exception:
                self.errors += 1
                log.exception("handler %r of event %r raised (ignored)", fn, event_type)
        return ok

    # --- federation -------------------------------------------------------------------
    def serve(self, nursery: trio.Nursery) -> None:
        """Receive federation events in this job cell (handlers run in ``nursery``)."""
        self._nursery = nursery
        engine = self.engine
        engine.cell.register_request_cb(P.TASK_CHANNEL, EVENT_TOPIC,
                                        guard(engine, engine.job_id, self._receive))

    def _default_targets(self) -> list[str]:
        me = self.engine.session.client_name
        return list(self.engine.clients) if me == SERVER_CLIENT else [SERVER_CLIENT]

    async def fire_fed_event(self, event_type: str, data: Any = None,
                             fl_ctx: FLContext | None = None,
                             targets: Iterable[str] | None = None) -> dict[str, str]:
        """Send ``event_type`` with ``data`` (CBOR-able) to other job cells; never waits.

        Also runs the local handlers (with scope federation and this cell as
        origin).  Returns ``{target: "ok" | "comm_error"}`` for the hand-off.
        """
        if not isinstance(event_type, str) or not event_type:
            raise ValueError(f"event type must be a non-empty string, got {event_type!r}")
        try:
            payload = cbor2.dumps(data)
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise JobError(f"event {event_type!r}: data cannot be sent: {exc}") from exc
        names = self._default_targets() if targets is None else list(targets)
        me = self.engine.session.client_name
        headers = {FedEventHeader.EVENT_TYPE.value: event_type,
                   FedEventHeader.ORIGIN.value: me,
                   FedEventHeader.TARGETS.value: names,
                   FedEventHeader.TIMESTAMP.value: time.time(),
                   FedEventHeader.DIRECTION.value: _OUT}
        messenger = JobCellMessenger(self.engine, self.engine.job_id)
        msg = messenger.new_cmi_message(fl_ctx, headers, payload)
        cells = [messenger.job_cell(n) for n in names]
        status = await self.engine.cell.fire_and_forget(
            cells, P.TASK_CHANNEL, EVENT_TOPIC, msg, optional=True)
        local = fl_ctx.copy() if fl_ctx is not None else FLContext()
        self._event_props(local, data, me)
        await self.fire_event(event_type, local, EventScope.FEDERATION)
        return {n: status.get(c, "skipped") for n, c in zip(names, cells, strict=True)}

    @staticmethod
    def _event_props(ctx: FLContext, data: Any, origin: str) -> None:
        ctx.set_prop(FLContextKey.EVENT_DATA, data, private=False)
        ctx.set_prop(FLContextKey.EVENT_ORIGIN, origin, private=False)
        ctx.set_prop(FLContextKey.EVENT_ORIGIN_SITE, origin, private=False)
        ctx.set_prop(FLContextKey.EVENT_ID, uuid.uuid4().hex, private=False)

    async def _receive(self, msg: Message, fl_ctx: FLContext) -> Message:
        event_type = msg.get_header(FedEventHeader.EVENT_TYPE.value)
        # the session-checked sender, not the (self-declared) origin header
        origin = msg.get_header(CMIHeader.HEADER_CLIENT_NAME.value)
        try:
            if not isinstance(event_type, str) or not event_type:
                raise JobError(f"federation event without a type from {origin!r}")
            data = cbor2.loads(bytes(msg.payload)) if msg.payload is not None else None
        except (CellnetError, cbor2.CBORDecodeError, TypeError, ValueError) as exc:
            log.warning("dropped a federation event: %s", exc)
            return Message()
        self._event_props(fl_ctx, data, str(origin))
        if self._nursery is not None:
            self._nursery.start_soon(self.fire_event, event_type, fl_ctx, EventScope.FEDERATION)
        else:
            await self.fire_event(event_type, fl_ctx, EventScope.FEDERATION)
        return Message()
