"""What a site job cell and its training process (agent) say to each other, and how.

Channel ``fl_agent``.  The job cell *pushes* a task (``task`` request:
reference ``MsgHeader`` task name/id headers, the task's DXO as one tensor
pack); the agent queues it and answers at once, and the training process
pulls it with ``get_task``.  The agent sends the result back (``result``
request: the same headers plus ``rc``, the result DXO or no payload); the
job cell answers ``{"accepted": bool, "reason": str}`` -- not accepted means
the task is no longer wanted (aborted, timed out, unknown), so the agent
stops retrying.  ``abort`` (fire-and-forget, task id header) tells the agent
a task is off.
"""

from __future__ import annotations

from typing import Any

from cellnet.defs import MetaKey, MsgHeader
from cellnet.fl.dxo import DXO, DataKind
from cellnet.message import Message

from .defs import RC, Task, TaskResult

__all__ = ["AGENT_CHANNEL", "AgentTopic", "result_message", "task_from_message",
           "task_message"]

AGENT_CHANNEL = "fl_agent"
TASK_NAME, TASK_ID, TASK_RC = MsgHeader.TASK_NAME.value, MsgHeader.TASK_ID.value, \
    MsgHeader.RC.value


class AgentTopic:
    TASK = "task"  # job cell -> agent: a task to queue
    RESULT = "result"  # agent -> job cell: a task's result
    ABORT = "abort"  # job cell -> agent: forget this task


def task_message(task_name: str, task_id: str, dxo: DXO) -> Message:
    """The ``task`` request for ``dxo``: its arrays as a tensor payload (no packed copy)."""
    return Message({TASK_NAME: task_name, TASK_ID: task_id}, dxo.to_payload())


def task_from_message(msg: Message) -> Task:
    """The :class:`Task` a ``task`` request carries (CorruptDataError/ValueError if bad)."""
    dxo = DXO.from_payload(msg.payload)
    meta = dict(dxo.meta)
    meta[MetaKey.DATA_KIND.value] = dxo.kind.value
    return Task(msg.get_header(TASK_NAME), msg.get_header(TASK_ID), meta, dict(dxo.data))


def result_dxo(result: TaskResult) -> DXO | None:
    """The DXO of a result: kind from ``meta[data_kind]`` (default WEIGHTS); None without data."""
    if result.data is None:
        return None
    meta: dict[str, Any] = dict(result.meta)
    kind = meta.pop(MetaKey.DATA_KIND.value, DataKind.WEIGHTS)
    return DXO(kind, dict(result.data), meta)


def result_message(task: Task, result: TaskResult) -> Message:
    """The ``result`` request for ``task`` (the DXO is built once, before any retry)."""
    dxo = result_dxo(result)
    headers = {TASK_NAME: task.task_name, TASK_ID: task.task_id,
               TASK_RC: RC(result.return_code).value}
    return Message(headers, None if dxo is None else dxo.to_bytes())
