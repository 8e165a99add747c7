"""The serving half of a Cell: handlers, replies, pooled server tasks, fire-and-forget.

:class:`Serving` is a mixin of :class:`cellnet._delivery.Delivery` (and so of
:class:`cellnet.cell.Cell`).  Inline handlers (plain sync ones, and async ones that cannot
suspend: :mod:`cellnet._handlers`) run in the link's reader; other async (or
blocking) handlers run in pooled server tasks that park between requests,
since waking a parked task is cheaper than starting one.
Replies are encoded once, where they are built, so a bad result fails in the
handler's context rather than in the link's writer.  Fire-and-forget messages
are handled in arrival order by one dispatcher task.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from cellnet.defs import CellReturnCode
from cellnet.message import Message, MessageHeaderKey
from cellnet.requests import Reason, error_reply, reply_from_result
from cellnet.stats import payload_nbytes
from cellnet.wire.codec import encode_message, encode_small_message

__all__ = ["Serving"]

log = logging.getLogger("cellnet.cell")
_HOP_COUNT = MessageHeaderKey.HOP_COUNT.value
_OK = CellReturnCode.OK.value


class _Slot:
    """An idle server task and the request handed to it."""

    __slots__ = ("msg", "task")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.msg: Message | None = None


#: Idle server tasks a cell keeps parked for the next requests (others exit).
_MAX_IDLE = 64


class Serving:
    """Mixin: run handlers and send their replies (see the module docstring)."""

    def _no_handler(self, request: Message) -> Message:
        self._stats.error("topic_unknown")
        return error_reply(
            request,
            CellReturnCode.INVALID_REQUEST,
            Reason.TOPIC_UNKNOWN,
            f"{self.fqcn} has no handler for channel {request.channel!r} "
            f"topic {request.topic!r}",
        )

    def _failed(self, request: Message, exc: Exception) -> Message:
        log.error("handler for %s/%s raised", request.channel, request.topic, exc_info=exc)
        self._stats.error("handler_exception")
        return error_reply(
            request,
            CellReturnCode.PROCESS_EXCEPTION,
            Reason.HANDLER_EXCEPTION,
            f"{type(exc).__name__}: {exc}",
        )

    def _checked_reply(self, request: Message, result: Any) -> tuple[Message, list | None]:
        """The reply for a handler's result, encoded here (a bad one fails now, not in the
        writer) once: the segments are what the link sends."""
        if result is None or type(result) is bytes:  # a plain payload: the common small reply
            reply = request.reply(_OK, result)
            reply.headers[_HOP_COUNT] = 0
            if result is None or len(result) <= self.link_config.stream_threshold:
                return reply, encode_small_message(reply.headers, result, self._limits)
            return reply, None
        reply = reply_from_result(request, result)
        reply.headers[_HOP_COUNT] = 0
        if payload_nbytes(reply.payload) > self.link_config.stream_threshold:
            return reply, None  # too big for one frame: it goes as a stream
        return reply, encode_message(reply, limits=self._limits)

    def _serve_now(self, handler: Any, request: Message) -> tuple[Message, list | None]:
        """Run an inline handler here; its reply (or the error reply) and segments."""
        try:
            return self._checked_reply(request, handler.call(request))
        except Exception as exc:
            return self._failed(request, exc), None

    async def _serve(self, request: Message) -> None:
        handler = self._handlers.get((request.channel, request.topic))  # type: ignore[arg-type]
        segments = None
        self._serving += 1
        try:
            if handler is None:
                reply = self._no_handler(request)
            else:
                try:
                    result = await self._call(handler, request)
                    reply, segments = self._checked_reply(request, result)
                except Exception as exc:
                    reply = self._failed(request, exc)
        finally:
            self._serving -= 1
        # the only request in service: its reply goes out now; many: the writer coalesces
        await self._reply(reply, segments, urgent=self._serving == 0)

    # ----------------------------------------------------------------- server tasks
    def _dispatch(self, request: Message) -> None:
        """Serve ``request`` in a task of its own: a parked server task if one is idle (waking
        one is cheaper than starting one), else a new one.  Never waits."""
        idle = self._idle_servers
        if idle:
            slot = idle.pop()
            slot.msg = request
            trio.lowlevel.reschedule(slot.task)
        else:
            self._running().start_soon(self._server, request)

    async def _server(self, request: Message) -> None:
        """Serve requests one after another; park between them, up to ``_MAX_IDLE`` tasks."""
        idle = self._idle_servers
        slot = _Slot(trio.lowlevel.current_task())
        while True:
            await self._serve(request)
            request = None  # type: ignore[assignment]  # a parked task must not pin a payload
            if len(idle) >= _MAX_IDLE:
                return
            idle.append(slot)

            def abort(_: Any) -> trio.lowlevel.Abort:
                idle.remove(slot)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
            request, slot.msg = slot.msg, None  # type: ignore[assignment]

    def _run_fnf_inline(self, handler: Any, msg: Message) -> None:
        try:
            handler.call(msg)
        except Exception:
            log.exception("fire-and-forget handler for %s/%s raised", msg.channel, msg.topic)
            self._stats.error("handler_exception")

    async def _fnf_dispatcher(self) -> None:
        """Handle queued fire-and-forget messages in arrival order (one task for all)."""
        queue = self._fnf
        while True:
            if not queue:
                await self._fnf_ready.park()
                continue
            msg = queue.popleft()
            self._fnf_space.unpark_all()
            handler = self._handlers.get((msg.channel, msg.topic))  # type: ignore[arg-type]
            if handler is None:
                self._stats.error("topic_unknown")
                continue
            if handler.inline:
                self._run_fnf_inline(handler, msg)
                continue
            try:
                await self._call(handler, msg)
            except Exception:
                log.exception("fire-and-forget handler for %s/%s raised", msg.channel, msg.topic)
                self._stats.error("handler_exception")
