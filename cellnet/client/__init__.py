"""The training-process side of cellnet: FlareAgent, the reference client defs, the short loop.

``cellnet.client.init() / receive() / send(model, metrics)`` is the small
loop most scripts need; :class:`FlareAgent` is the task API underneath.
:func:`to_torch` turns received params into PyTorch tensors (no copy).
"""

from __future__ import annotations

from cellnet.client._convert import to_torch
from cellnet.client.agent import FlareAgent
from cellnet.client.api import (
    FLModel,
    get_job_id,
    get_site_name,
    init,
    is_running,
    receive,
    send,
    shutdown,
)
from cellnet.client.defs import (
    RC,
    AgentClosed,
    CallStateError,
    MetaKey,
    MsgHeader,
    PayloadKey,
    Task,
    TaskResult,
    agent_site_fqcn,
)

__all__ = [
    "RC",
    "AgentClosed",
    "CallStateError",
    "FLModel",
    "FlareAgent",
    "MetaKey",
    "MsgHeader",
    "PayloadKey",
    "Task",
    "TaskResult",
    "agent_site_fqcn",
    "get_job_id",
    "get_site_name",
    "init",
    "is_running",
    "receive",
    "send",
    "shutdown",
    "to_torch",
]
