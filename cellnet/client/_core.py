"""The trio side of a FlareAgent: task queue, call-order state and result delivery.

Theory of operation
-------------------
Everything here runs in the trio thread of the agent's cell, so the state
needs no locks: the blocking :class:`~cellnet.client.FlareAgent` methods
hop into this thread (``trio.from_thread``) and run one coroutine each.

* The job cell pushes tasks (``task`` requests); they wait in a queue until
  the training process pulls one with :meth:`AgentCore.get_task`.
* The agent holds at most one task: ``get_task`` while holding one, or
  ``submit_result`` without one, is a :class:`CallStateError`.  A submit is
  a single call whatever its outcome -- afterwards the agent is ready for
  the next ``get_task``.
* ``submit`` sends the result to the job cell and retries while delivery
  fails for a transient reason (timeout, link trouble), until it is
  accepted, refused (the task is no longer wanted), aborted, or the agent is
  closed.  Anything that changes what a waiter waits for (a task arrives, an
  abort, the close) wakes every waiter through :meth:`_notify`.
"""

from __future__ import annotations

import logging
import math
from collections import deque

import cbor2
import trio

from cellnet.defs import CellReturnCode
from cellnet.errors import CellnetError
from cellnet.message import Message

from . import _proto as P
from .defs import AgentClosed, CallStateError, Task, TaskResult

__all__ = ["AgentCore"]

log = logging.getLogger("cellnet.client")
#: Delivery failures worth another attempt; any other refusal ends the submit.
RETRYABLE = frozenset({CellReturnCode.TIMEOUT, CellReturnCode.COMM_ERROR,
                       CellReturnCode.SERVICE_UNAVAILABLE})
#: How many aborted task ids the agent remembers.
MAX_ABORTED = 1024


def _refuse(code: CellReturnCode, error: str) -> Message:
    return Message({"cellnet.return_code": code.value, "cellnet.error": error})


class AgentCore:
    """Serves ``fl_agent`` on ``cell`` for tasks from ``parent`` (see the module docstring)."""

    def __init__(self, cell, parent: str, *, submit_timeout: float = 60.0,
                 retry_interval: float = 0.5) -> None:
        self.cell, self.parent = cell, parent
        self.submit_timeout, self.retry_interval = submit_timeout, retry_interval
        self.started = False
        self.current: Task | None = None
        self.queue: deque[Task] = deque()
        self.aborted: deque[str] = deque(maxlen=MAX_ABORTED)
        self.closed = trio.Event()
        self.close_reason = ""
        self.attempts = 0  # result deliveries tried (for statistics and tests)
        self._changed = trio.Event()

    def register(self) -> None:
        self.cell.register_request_cb(P.AGENT_CHANNEL, P.AgentTopic.TASK, self._on_task)
        self.cell.register_request_cb(P.AGENT_CHANNEL, P.AgentTopic.ABORT, self._on_abort)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def close(self, reason: str) -> None:
        """No more tasks: waiting and later ``get_task`` calls raise AgentClosed."""
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()
            self._notify()

    # --- from the job cell ----------------------------------------------------------
    def _from_parent(self, msg: Message) -> Message | None:
        if msg.origin != self.parent:
            return _refuse(CellReturnCode.AUTHENTICATION_ERROR,
                           f"agent tasks come from {self.parent}, not {msg.origin}")
        return None

    async def _on_task(self, msg: Message) -> Message:
        refusal = self._from_parent(msg)
        if refusal is not None:
            return refusal
        if self.closed.is_set():
            return _refuse(CellReturnCode.SERVICE_UNAVAILABLE,
                           f"agent closed: {self.close_reason}")
        try:
            task = P.task_from_message(msg)
        except (CellnetError, TypeError, ValueError) as exc:
            return _refuse(CellReturnCode.INVALID_REQUEST, f"bad task data: {exc}")
        self.queue.append(task)
        self._notify()
        return Message()

    async def _on_abort(self, msg: Message) -> Message:
        refusal = self._from_parent(msg)
        if refusal is not None:
            return refusal
        task_id = msg.get_header(P.TASK_ID)
        if isinstance(task_id, str):
            self.aborted.append(task_id)
            self.queue = deque(t for t in self.queue if t.task_id != task_id)
            self._notify()
        return Message()

    # --- from the training process ----------------------------------------------------
    def start(self) -> None:
        if self.started:
            raise CallStateError("the agent is already started")
        self.started = True

    def check_ready(self) -> None:
        if not self.started:
            raise CallStateError("call start() before get_task()")
        if self.current is not None:
            raise CallStateError(f"submit the result of task {self.current.task_id} "
                                 f"({self.current.task_name}) before asking for another")

    async def get_task(self, timeout: float | None) -> Task | None:
        """The next task; None after ``timeout`` seconds; AgentClosed once closed."""
        self.check_ready()
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                if self.closed.is_set():
                    raise AgentClosed(f"agent closed: {self.close_reason}")
                if self.queue:
                    self.current = self.queue.popleft()
                    return self.current
                await self._changed.wait()
        return None

    def take_current(self, result: TaskResult) -> tuple[Task, Message]:
        """Validate a submit and end the current task (nothing changes if it raises)."""
        if not isinstance(result, TaskResult):
            raise TypeError(f"submit_result takes a TaskResult, got {type(result).__name__}")
        if self.current is None:
            raise CallStateError("no task to submit a result for: call get_task() first "
                                 "(and submit each result once)")
        msg = P.result_message(self.current, result)  # bad data raises here
        task, self.current = self.current, None
        return task, msg

    async def submit(self, result: TaskResult) -> bool:
        """Deliver ``result`` (see the module docstring); whether the job cell took it."""
        task, msg = self.take_current(result)
        while True:
            if task.task_id in self.aborted:
                log.warning("task %s was aborted; its result is dropped", task.task_id)
                return False
            if self.closed.is_set():
                log.warning("agent closed (%s); result of task %s not delivered",
                            self.close_reason, task.task_id)
                return False
            self.attempts += 1
            reply = await self.cell.send_request(
                self.parent, P.AGENT_CHANNEL, P.AgentTopic.RESULT,
                Message(dict(msg.headers), msg.payload), self.submit_timeout)
            code = reply.return_code
            if code == CellReturnCode.OK:
                return self._accepted(task, reply)
            if code not in RETRYABLE:
                log.error("result of task %s refused (%s): %s", task.task_id, code, reply.error)
                return False
            log.warning("result of task %s not delivered (%s: %s); retrying in %.1f s",
                        task.task_id, code, reply.error, self.retry_interval)
            with trio.move_on_after(self.retry_interval):
                await self._changed.wait()  # an abort or the close ends the pause early

    @staticmethod
    def _accepted(task: Task, reply: Message) -> bool:
        try:
            doc = cbor2.loads(bytes(reply.payload or b""))
        except (cbor2.CBORDecodeError, ValueError, TypeError):
            doc = None
        if not isinstance(doc, dict):
            log.error("unreadable answer to the result of task %s", task.task_id)
            return False
        if not doc.get("accepted"):
            log.warning("result of task %s not taken: %s", task.task_id, doc.get("reason"))
            return False
        return True
