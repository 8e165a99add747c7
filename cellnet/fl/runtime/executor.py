"""Site side of tasks: executors registered per task name, answering with a return code.

An :class:`Executor` implements ``execute(task_name, dxo, fl_ctx, abort_signal)``
(sync or async) and returns a :class:`~cellnet.fl.dxo.DXO`.  The
:class:`ExecutorRunner` of a site job cell serves the task channel through
the session guard: a task no executor is registered for answers
``TASK_UNKNOWN``; one its executor does not support (``supported_tasks``,
or :class:`TaskUnsupportedError`) ``TASK_UNSUPPORTED``; undecodable task
data ``BAD_TASK_DATA``; a failing task data/result filter of the app
``TASK_DATA_FILTER_ERROR``/``TASK_RESULT_FILTER_ERROR``; a raising executor
``EXECUTION_EXCEPTION`` (with the traceback in the reply's error header); a
result that is not a DXO ``EXECUTION_RESULT_ERROR``; a task aborted with
``__abort_task__`` ``TASK_ABORTED``.  ``__end_run__`` sets :attr:`ExecutorRunner.ended`.
The task-level code travels in the ``__rc__`` header of an ``ok`` cell reply.

Wire contract: the task data arrives as a DXO tensor payload
(:meth:`~cellnet.fl.dxo.DXO.to_payload`: the arrays, with the kind and meta
in the pack metadata; one frame when small, a stream of chunks when large),
decoded zero-copy.  The result goes back the same way, straight from the
result DXO's arrays, and its reply also carries the task's ``__task_id__``
and ``__task_name__`` headers, so a server that folds results in place as
their chunks arrive (:mod:`cellnet.fl.runtime.inplace`) knows the task
before the first byte.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from collections.abc import Collection, Mapping
from typing import Any

import trio

from cellnet.defs import FLContextKey, ReturnCode
from cellnet.errors import CellnetError, JobError
from cellnet.fl.dxo import DXO
from cellnet.fl.runtime import _proto as P
from cellnet.fl.runtime.context import FLContext
from cellnet.fl.runtime.messenger import guard
from cellnet.fl.runtime.task_filters import FilterStage, TaskFilterError, TaskFilters
from cellnet.message import Message

__all__ = ["Executor", "ExecutorRunner", "Signal", "TaskUnsupportedError", "task_reply"]

log = logging.getLogger("cellnet.fl.executor")


class Signal:
    """An abort signal an executor can poll (``triggered``) or wait on."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self.reason = ""

    @property
    def triggered(self) -> bool:
        return self._event.is_set()

    def trigger(self, reason: str = "") -> None:
        self.reason = self.reason or reason
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


class TaskUnsupportedError(JobError):
    """Raised by an executor for a task it does not support (answered ``TASK_UNSUPPORTED``)."""


class Executor:
    """Base class of executors: override :meth:`execute`.

    ``supported_tasks`` (None: every task it is registered for) declares what
    it can run; any other task is answered ``TASK_UNSUPPORTED`` without
    calling :meth:`execute`, as is one whose ``execute`` raises
    :class:`TaskUnsupportedError`.
    """

    supported_tasks: Collection[str] | None = None

    def execute(self, task_name: str, dxo: DXO, fl_ctx: FLContext, abort_signal: Signal) -> Any:
        raise CellnetError(f"{type(self).__name__} does not implement execute()")


def task_reply(rc: str, dxo: DXO | None = None, error: str | None = None,
               task: tuple[Any, Any] | None = None) -> Message:
    """The reply carrying a task result (``rc`` under ``__rc__``; ``task``: (name, id))."""
    headers: dict[str, Any] = {P.TASK_RC: str(rc)}
    if error is not None:
        headers["cellnet.error"] = error
    if task is not None and isinstance(task[0], str) and isinstance(task[1], str):
        headers[P.TASK_NAME], headers[P.TASK_ID] = task
    return Message(headers, None if dxo is None else dxo.to_payload())


class ExecutorRunner:
    """Serves tasks in one site job cell (see the module docstring)."""

    def __init__(self, engine: Any, job_id: str, executors: Mapping[str, Executor]) -> None:
        self.engine, self.job_id = engine, job_id
        self.executors = dict(executors)
        for name, ex in self.executors.items():
            if not callable(getattr(ex, "execute", None)):
                raise TypeError(f"executor for task {name!r} has no execute() method")
        self.ended = trio.Event()
        self._running: dict[str, tuple[trio.CancelScope, Signal]] = {}
        self.handled: list[tuple[str, str]] = []  # (task name, rc), in completion order

    def register(self) -> None:
        cell = self.engine.cell
        cell.register_request_cb(P.TASK_CHANNEL, P.TaskTopic.RUN, guard(self.engine, self.job_id,
                                                                          self._run))
        cell.register_request_cb(P.TASK_CHANNEL, P.TaskTopic.ABORT_TASK,
                                 guard(self.engine, self.job_id, self._abort))
        cell.register_request_cb(P.TASK_CHANNEL, P.TaskTopic.END_RUN,
                                 guard(self.engine, self.job_id, self._end))

    async def _end(self, msg: Message, fl_ctx: FLContext) -> Message:
        for scope, signal in self._running.values():
            signal.trigger("end of run")
            scope.cancel()
        self.ended.set()
        return Message()

    async def _abort(self, msg: Message, fl_ctx: FLContext) -> Message:
        task_id = msg.get_header(P.TASK_ID)
        running = self._running.get(task_id)
        if running is not None:
            running[1].trigger("task aborted")
            running[0].cancel()
        return Message()

    async def _run(self, msg: Message, fl_ctx: FLContext) -> Message:
        name, task_id = msg.get_header(P.TASK_NAME), msg.get_header(P.TASK_ID)
        rc, reply = await self._execute(name, task_id, msg, fl_ctx)
        self.handled.append((str(name), rc))
        return reply

    async def _execute(self, name: Any, task_id: Any, msg: Message, fl_ctx: FLContext):
        executor = self.executors.get(name) if isinstance(name, str) else None
        if executor is None:
            return ReturnCode.TASK_UNKNOWN, task_reply(
                ReturnCode.TASK_UNKNOWN, error=f"no executor for task {name!r}")
        supported = getattr(executor, "supported_tasks", None)
        if supported is not None and name not in supported:
            return ReturnCode.TASK_UNSUPPORTED, task_reply(
                ReturnCode.TASK_UNSUPPORTED,
                error=f"{type(executor).__name__} does not support task {name!r}")
        try:
            dxo = DXO.from_payload(msg.payload)
        except (CellnetError, TypeError, ValueError) as exc:
            return ReturnCode.BAD_TASK_DATA, task_reply(ReturnCode.BAD_TASK_DATA, error=str(exc))
        fl_ctx.set_prop(FLContextKey.TASK_NAME, name, private=False)
        fl_ctx.set_prop(FLContextKey.TASK_ID, task_id, private=False)
        filters = getattr(self.engine, "filters", None)
        if not isinstance(filters, TaskFilters):
            filters = TaskFilters()
        try:
            dxo = await filters.apply(FilterStage.DATA_IN, name, dxo, fl_ctx)
        except TaskFilterError as exc:
            log.warning("%s", exc)
            return exc.rc, task_reply(exc.rc, error=str(exc))
        signal = Signal()
        fl_ctx.set_prop(FLContextKey.RUN_ABORT_SIGNAL, signal)
        result: Any = None
        with trio.CancelScope() as scope:
            self._running[str(task_id)] = (scope, signal)
            try:
                if inspect.iscoroutinefunction(executor.execute):
                    result = await executor.execute(name, dxo, fl_ctx, signal)
                else:
                    result = await trio.to_thread.run_sync(
                        executor.execute, name, dxo, fl_ctx, signal, abandon_on_cancel=True)
            except TaskUnsupportedError as exc:
                return ReturnCode.TASK_UNSUPPORTED, task_reply(ReturnCode.TASK_UNSUPPORTED,
                                                               error=str(exc))
            except Exception:
                log.exception("executor for task %r raised", name)
                return ReturnCode.EXECUTION_EXCEPTION, task_reply(
                    ReturnCode.EXECUTION_EXCEPTION, error=traceback.format_exc())
            finally:
                self._running.pop(str(task_id), None)
        if scope.cancelled_caught or signal.triggered:
            return ReturnCode.TASK_ABORTED, task_reply(ReturnCode.TASK_ABORTED,
                                                       error=signal.reason or "aborted")
        if not isinstance(result, DXO):
            return ReturnCode.EXECUTION_RESULT_ERROR, task_reply(
                ReturnCode.EXECUTION_RESULT_ERROR,
                error=f"executor returned {type(result).__name__}, not a DXO")
        try:
            result = await filters.apply(FilterStage.RESULT_OUT, name, result, fl_ctx)
        except TaskFilterError as exc:
            log.warning("%s", exc)
            return exc.rc, task_reply(exc.rc, error=str(exc))
        return ReturnCode.OK, task_reply(ReturnCode.OK, result, task=(name, task_id))
