"""The training-process side of cellnet: FlareAgent, the reference client defs, the short loop.

``cellnet.client.init() / receive() / send(model, metrics)`` is the small
loop most scripts need; :class:`FlareAgent` is the task API underneath.
"""

from __future__ import annotations

from cellnet.client.agent import FlareAgent
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
    "FlareAgent",
    "MetaKey",
    "MsgHeader",
    "PayloadKey",
    "Task",
    "TaskResult",
    "agent_site_fqcn",
]
