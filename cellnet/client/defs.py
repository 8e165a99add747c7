"""The reference ``client.defs`` names (Task, TaskResult, RC, MetaKey, MsgHeader...) and errors.

The constants are the ones :mod:`cellnet.defs` already holds (same names and
string values); this module gathers them where users of the reference API
look for them, next to the two value types a training process exchanges
with its site and the two errors of :class:`~cellnet.client.FlareAgent`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cellnet.defs import RC, MetaKey, MsgHeader, PayloadKey
from cellnet.errors import CellnetError
from cellnet.fqcn import agent_site_fqcn

__all__ = [
    "RC",
    "AgentClosed",
    "CallStateError",
    "MetaKey",
    "MsgHeader",
    "PayloadKey",
    "Task",
    "TaskResult",
    "agent_site_fqcn",
]


class AgentClosed(CellnetError):
    """The agent was stopped, or lost its site's job cell: no more tasks will come."""


class CallStateError(CellnetError):
    """An agent method was called out of order (e.g. two get_task without a submit_result)."""


def _meta(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} meta must be a mapping, got {type(value).__name__}")
    return dict(value)


@dataclasses.dataclass
class Task:
    """A task handed to the training process: its name, id, meta and data (name -> array)."""

    task_name: str
    task_id: str
    meta: dict
    data: Any

    def __post_init__(self) -> None:
        for what in ("task_name", "task_id"):
            if not isinstance(getattr(self, what), str) or not getattr(self, what):
                raise ValueError(f"{what} must be a non-empty str, got {getattr(self, what)!r}")
        self.meta = _meta(self.meta, "task")


@dataclasses.dataclass
class TaskResult:
    """What the training process submits: meta, data (name -> array) and an ``RC`` value."""

    meta: dict
    data: Any
    return_code: str = RC.OK

    def __post_init__(self) -> None:
        self.meta = _meta(self.meta, "result")
        try:
            self.return_code = RC(self.return_code)
        except ValueError:
            raise ValueError(f"return_code must be one of {[c.value for c in RC]}, "
                             f"got {self.return_code!r}") from None
        if self.data is not None and not isinstance(self.data, Mapping):
            raise TypeError(f"result data must be a mapping name -> array (or None), "
                            f"got {type(self.data).__name__}")
