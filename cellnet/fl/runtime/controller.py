"""Server side of tasks: the controller API workflows are written against.

A workflow subclasses :class:`Controller` and implements
``async control_flow(fl_ctx)``; its return value (JSON-ready) becomes the
job's results.  The job cell sets :attr:`Controller.engine` (cell, session,
peer check, job id, the job's client sites) before calling it.

* :meth:`broadcast_and_wait` sends one task to many sites at once and waits
  until all answered, or ``min_responses`` OK results arrived and
  ``wait_time_after_min_received`` more seconds passed, or the task's
  timeout; every target gets a :class:`TaskResult` (unanswered ones
  ``TASK_ABORTED`` when the wait ended early, ``COMMUNICATION_ERROR`` on timeout).
  With ``result_received_cb`` each result is handed over as it arrives (to
  aggregate in time) and the returned results keep only its kind and meta,
  so the server holds one result's arrays at a time, not N.
* :meth:`send_and_wait` is the one-target case; :meth:`relay_and_wait` visits
  targets in sequence, each OK result becoming the next target's task data.
* the app's task filters (:mod:`cellnet.fl.runtime.task_filters`) run on
  the data of each target before it leaves and on each OK result as it
  arrives; a failing one gives that target ``TASK_DATA_FILTER_ERROR`` /
  ``TASK_RESULT_FILTER_ERROR``.
* with ``result_fold`` (a :class:`~cellnet.fl.runtime.inplace.ResultFold`)
  the results are aggregated **in place**: each large result's chunks are
  folded into the fold's accumulator as they arrive, and the TaskResult
  handed to ``result_received_cb`` carries the result's kind and meta only
  (``folded`` set); a site whose result stream fails is answered
  ``EXECUTION_RESULT_ERROR`` at once.  When the wait ends, results already
  being folded may complete (their sites count in ``result_fold.committed``
  even if their reply came too late) and new ones are refused.  Server-side result filters need the
  whole DXO, so a task with any falls back to whole-buffer results.
* task data and results travel as DXO tensor payloads (see
  :mod:`cellnet.fl.dxo`): encoded from the DXO's arrays, decoded zero-copy.
* :meth:`abort_task` ends a task's waits and tells the sites
  (``__abort_task__``); :meth:`end_run` sends ``__end_run__`` to every site.
"""

from __future__ import annotations

import inspect
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from cellnet._streaming import stream_progress
from cellnet.defs import CellReturnCode, MetaKey, ReturnCode
from cellnet.errors import CellnetError
from cellnet.fl.dxo import DXO
from cellnet.fl.runtime import _proto as P
from cellnet.fl.runtime.context import FLContext
from cellnet.fl.runtime.inplace import ResultFold, in_place_results
from cellnet.fl.runtime.messenger import JobCellMessenger
from cellnet.fl.runtime.task_filters import FilterStage, TaskFilterError, TaskFilters
from cellnet.message import Message
from cellnet.requests import CELL_RC
from cellnet.stream.tensor_sink import FoldedUpdate

__all__ = ["Controller", "ResultCallback", "Task", "TaskResult"]


@dataclass
class Task:
    """A named task with DXO data, a timeout in seconds and an id."""

    name: str
    data: DXO
    timeout: float = 30.0
    props: dict[str, Any] = field(default_factory=dict)
    task_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"task name must be a non-empty str, got {self.name!r}")
        if not isinstance(self.data, DXO):
            raise TypeError(f"task data must be a DXO, got {type(self.data).__name__}")
        t = self.timeout
        if isinstance(t, bool) or not isinstance(t, int | float) or not t > 0 or math.isnan(t):
            raise ValueError(f"task timeout must be a positive number of seconds, got {t!r}")


@dataclass(frozen=True)
class TaskResult:
    """One site's answer to a task: reference return code, result DXO (if OK), error text."""

    client: str
    rc: str
    dxo: DXO | None = None
    error: str | None = None
    folded: FoldedUpdate | None = None  # set when the arrays were folded in place on arrival

    @property
    def ok(self) -> bool:
        return self.rc == ReturnCode.OK


def _result(client: str, reply: Message) -> TaskResult:
    rc = reply.return_code or ReturnCode.ERROR
    if reply.get_header(CELL_RC) != CellReturnCode.OK:
        return TaskResult(client, str(rc), None, reply.error)
    task_rc = reply.get_header(P.TASK_RC, ReturnCode.OK)
    if task_rc != ReturnCode.OK:
        return TaskResult(client, str(task_rc), None, reply.error)
    payload = reply.payload
    try:
        if isinstance(payload, FoldedUpdate):  # folded in place as it arrived
            meta = dict(payload.meta)
            kind = meta.pop(str(MetaKey.DATA_KIND), None)
            return TaskResult(client, ReturnCode.OK, DXO(kind, {}, meta), folded=payload)
        return TaskResult(client, ReturnCode.OK, DXO.from_payload(payload))
    except (CellnetError, TypeError, ValueError) as exc:
        return TaskResult(client, ReturnCode.EXECUTION_RESULT_ERROR, None, str(exc))


#: ``cb(result)`` (sync or async): None keeps the result, a TaskResult replaces it.
ResultCallback = Callable[["TaskResult"], "TaskResult | Awaitable[TaskResult | None] | None"]


def _without_arrays(result: TaskResult) -> TaskResult:
    if result.dxo is None:
        return result
    return TaskResult(result.client, result.rc, DXO(result.dxo.kind, {}, result.dxo.meta),
                      result.error, result.folded)


class Controller:
    """Base class of workflows (see the module docstring)."""

    engine: Any = None

    async def control_flow(self, fl_ctx: FLContext) -> Any:
        raise CellnetError(f"{type(self).__name__} does not implement control_flow()")

    # --- helpers --------------------------------------------------------------------
    @property
    def clients(self) -> list[str]:
        """The client sites of this job."""
        return list(self.engine.clients)

    @property
    def messenger(self) -> JobCellMessenger:
        m = getattr(self, "_messenger", None)
        if m is None:
            m = self._messenger = JobCellMessenger(self.engine, self.engine.job_id)
        return m

    def _scopes(self) -> dict[str, trio.CancelScope]:
        if not hasattr(self, "_task_scopes"):
            self._task_scopes: dict[str, trio.CancelScope] = {}
        return self._task_scopes

    def _targets(self, targets: Iterable[str] | None) -> list[str]:
        names = self.clients if targets is None else list(targets)
        unknown = [t for t in names if t not in self.engine.clients]
        if unknown:
            raise ValueError(f"target(s) not in this job: {', '.join(unknown)}")
        if not names:
            raise ValueError("a task needs at least one target")
        return names

    def _task_filters(self) -> TaskFilters | None:
        """The app's task filter chains (the job cell puts them on the engine), if any."""
        filters = getattr(self.engine, "filters", None)
        return filters if isinstance(filters, TaskFilters) and filters else None

    def _message(self, task: Task, data: DXO) -> Message:
        return Message({P.TASK_NAME: task.name, P.TASK_ID: task.task_id}, data.to_payload())

    # --- the task API -----------------------------------------------------------------
    async def broadcast_and_wait(
        self,
        task: Task,
        targets: Iterable[str] | None = None,
        min_responses: int = 0,
        wait_time_after_min_received: float = 0.0,
        fl_ctx: FLContext | None = None,
        result_received_cb: ResultCallback | None = None,
        result_fold: ResultFold | None = None,
        on_data_sent: Callable[[], None] | None = None,
    ) -> dict[str, TaskResult]:
        """Send ``task`` to ``targets`` (default: all clients) and collect their results.

        ``result_received_cb(result)`` runs for each result as it arrives; what
        it returns (a TaskResult, or None to keep ``result``) is stored without
        its arrays, and only stored OK results count toward ``min_responses``.
        ``result_fold``: aggregate the results in place (see the module docstring).
        ``on_data_sent()`` runs once the task data has been handed to the links
        in full for every target (streamed data only); the controller then
        drops its own references to the data's arrays, so the caller can
        release them while it waits for the results.
        """
        names = self._targets(targets)
        if result_received_cb is not None and not callable(result_received_cb):
            raise TypeError(f"result_received_cb must be callable, got "
                            f"{type(result_received_cb).__name__}")
        if isinstance(min_responses, bool) or not isinstance(min_responses, int) \
                or not 0 <= min_responses <= len(names):
            raise ValueError(f"min_responses must be an int in 0..{len(names)}, "
                             f"got {min_responses!r}")
        results: dict[str, TaskResult] = {}
        enough = trio.Event()
        filters = self._task_filters()
        msg = None if filters else self._message(task, task.data)  # filtered: one per target
        if result_fold is not None and filters and filters.chain("result", task.name):
            result_fold = None  # server result filters need whole DXOs
        registry = in_place_results(self.engine) if result_fold is not None else None

        sent_to: set[str] = set()
        messages = [msg] if msg is not None else []

        def tracker(name: str) -> Callable[[int, int], None]:
            def progress(done: int, total: int) -> None:
                if done < total or name in sent_to:
                    return
                sent_to.add(name)
                if len(sent_to) == len(names) and on_data_sent is not None:
                    for m in messages:  # already encoded: forget the arrays
                        if isinstance(m.payload, dict):
                            m.payload.clear()
                    on_data_sent()
            return progress

        async def one(name: str) -> None:
            out = msg
            if filters:
                try:
                    data = await filters.apply(FilterStage.DATA_OUT, task.name, task.data, fl_ctx)
                except TaskFilterError as exc:
                    results[name] = TaskResult(name, exc.rc, None, str(exc))
                    return
                out = self._message(task, data)
                messages.append(out)
            with stream_progress(tracker(name)):
                reply = await self._send_task(name, out, task, fl_ctx, result_fold)
            out = None
            if reply is None:
                result = TaskResult(name, ReturnCode.EXECUTION_RESULT_ERROR, None,
                                    f"result stream failed: {result_fold.failed.get(name)}")
            else:
                result = _result(name, reply)
            del reply
            if filters and result.ok and result.dxo is not None:
                try:
                    result = TaskResult(name, result.rc, await filters.apply(
                        FilterStage.RESULT_IN, task.name, result.dxo, fl_ctx))
                except TaskFilterError as exc:
                    result = TaskResult(name, exc.rc, None, str(exc))
            if result_received_cb is not None:
                kept = result_received_cb(result)
                if inspect.isawaitable(kept):
                    kept = await kept
                result = _without_arrays(result if kept is None else kept)
            results[name] = result
            if min_responses and sum(r.ok for r in results.values()) >= min_responses:
                enough.set()

        async def stop_early(nursery: trio.Nursery) -> None:
            await enough.wait()
            await trio.sleep(wait_time_after_min_received)
            nursery.cancel_scope.cancel()

        scopes = self._scopes()
        if registry is not None:
            registry.open(result_fold)
        async with trio.open_nursery() as nursery:
            scopes[task.task_id] = nursery.cancel_scope
            try:
                if min_responses:
                    nursery.start_soon(stop_early, nursery)
                async with trio.open_nursery() as senders:
                    for name in names:
                        senders.start_soon(one, name)
                nursery.cancel_scope.cancel()  # all answered: stop the early-exit watcher
            finally:
                scopes.pop(task.task_id, None)
                if result_fold is not None:
                    result_fold.accepting = False
        if result_fold is not None:
            await result_fold.finish(task.timeout)  # results being folded may complete
        missing = [n for n in names if n not in results]
        for name in missing:
            results[name] = TaskResult(name, ReturnCode.TASK_ABORTED, None,
                                       "the wait for this result ended early")
        if missing:
            await self._tell_abort(task, missing)
        return {n: results[n] for n in names}

    async def _send_task(self, name: str, msg: Message, task: Task, fl_ctx: FLContext | None,
                         fold: ResultFold | None) -> Message | None:
        """The reply of ``name`` to ``msg``; None when its in-place result stream failed."""
        if fold is None:
            return (await self.messenger.send_to_cell(
                [name], P.TASK_CHANNEL, P.TaskTopic.RUN, msg, task.timeout, fl_ctx))[name]
        reply: list[Message] = []

        async def ask(scope: trio.CancelScope) -> None:
            reply.append((await self.messenger.send_to_cell(
                [name], P.TASK_CHANNEL, P.TaskTopic.RUN, msg, task.timeout, fl_ctx))[name])
            scope.cancel()

        async with trio.open_nursery() as race:
            race.start_soon(ask, race.cancel_scope)
            await fold.failure(name).wait()
            race.cancel_scope.cancel()
        return reply[0] if reply else None

    async def send_and_wait(self, task: Task, target: str,
                            fl_ctx: FLContext | None = None) -> TaskResult:
        """Send ``task`` to one site and wait for its result."""
        return (await self.broadcast_and_wait(task, [target], fl_ctx=fl_ctx))[target]

    async def relay_and_wait(self, task: Task, targets: Iterable[str] | None = None,
                             fl_ctx: FLContext | None = None) -> list[TaskResult]:
        """Visit ``targets`` in order; each OK result is the data of the next visit."""
        out: list[TaskResult] = []
        data = task.data
        for name in self._targets(targets):
            step = Task(task.name, data, task.timeout, dict(task.props), task.task_id)
            result = await self.send_and_wait(step, name, fl_ctx)
            out.append(result)
            if result.ok and result.dxo is not None:
                data = result.dxo
        return out

    async def abort_task(self, task: Task) -> None:
        """Stop waiting for ``task`` and tell every client to abort it."""
        scope = self._scopes().get(task.task_id)
        if scope is not None:
            scope.cancel()
        await self._tell_abort(task, self.clients)

    async def _tell_abort(self, task: Task, names: list[str]) -> None:
        msg = Message({P.TASK_ID: task.task_id, P.TASK_NAME: task.name})
        await self.messenger.send_to_cell(names, P.TASK_CHANNEL, P.TaskTopic.ABORT_TASK, msg, 0,
                                          None, optional=True)

    async def end_run(self, timeout: float = 5.0) -> dict[str, str]:
        """Send ``__end_run__`` to every client; ``{client: reference rc}``."""
        replies = await self.messenger.send_to_cell(
            self.clients, P.TASK_CHANNEL, P.TaskTopic.END_RUN, None, timeout, None)
        return {n: str(r.return_code) for n, r in replies.items()}
