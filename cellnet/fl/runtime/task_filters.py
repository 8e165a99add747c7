"""Task data/result filter chains from an app config, applied around tasks on both sides.

An app config (``config_fed_server.json`` or ``config_fed_client.json``) may
hold ``"task_data_filters"`` and ``"task_result_filters"``: lists of
``{"tasks": ["train", ...] or "*", "filters": [spec, ...]}``.  A spec is
either ``{"path": "module.Class", "args": {...}}`` (loaded like any app
component, ``custom/`` first) or ``{"name": "Quantize", "args": {...}}`` (a
filter of :mod:`cellnet.fl.filters`).  For a task, every entry whose tasks
match contributes its filters, in config order.

Where they run (the reference's four points):

* server: task **data** filters before a task leaves, **result** filters on
  each result that arrives (:class:`~cellnet.fl.runtime.Controller`);
* site: task **data** filters on a task that arrives, **result** filters on
  the executor's result before it leaves (:class:`~cellnet.fl.runtime.ExecutorRunner`).

Every filter leaves one entry in the DXO's ``meta[MetaKey.FILTER_HISTORY]``
tagged with the site and the point (``stage``): a filter that writes its own
entry (the built-ins do) gets it tagged, one that does not gets a plain
entry with its class name.  A filter that raises (or returns something other
than a DXO) fails the task with :class:`TaskFilterError`, which the caller
turns into ``TASK_DATA_FILTER_ERROR`` / ``TASK_RESULT_FILTER_ERROR``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import trio

from cellnet.defs import FLContextKey, MetaKey, ReturnCode
from cellnet.errors import CellnetError, JobError
from cellnet.fl.dxo import DXO
from cellnet.fl.filters import make_filter
from cellnet.fl.runtime.components import load_component
from cellnet.fl.runtime.context import FLContext

__all__ = ["DATA_KEY", "RESULT_KEY", "FilterStage", "TaskFilterError", "TaskFilters",
           "load_task_filters"]

DATA_KEY = "task_data_filters"
RESULT_KEY = "task_result_filters"
ALL_TASKS = "*"


class FilterStage(StrEnum):
    """The four points where task filters run."""

    DATA_OUT = "task_data_out"  # server, before sending
    DATA_IN = "task_data_in"  # site, on arrival
    RESULT_OUT = "task_result_out"  # site, before replying
    RESULT_IN = "task_result_in"  # server, on arrival

    @property
    def rc(self) -> str:
        """The reference return code of a task whose filter at this point failed."""
        if self in (FilterStage.DATA_OUT, FilterStage.DATA_IN):
            return ReturnCode.TASK_DATA_FILTER_ERROR
        return ReturnCode.TASK_RESULT_FILTER_ERROR


class TaskFilterError(JobError):
    """A task filter failed; ``rc`` is the reference return code to answer with."""

    def __init__(self, message: str, rc: str) -> None:
        super().__init__(message)
        self.rc = rc


@dataclass
class _Entry:
    tasks: frozenset[str] | None  # None: every task
    filters: list[Any]


@dataclass
class TaskFilters:
    """The data and result chains of one app (empty when the config names none)."""

    site: str = ""
    data: list[_Entry] = field(default_factory=list)
    result: list[_Entry] = field(default_factory=list)

    def chain(self, kind: str, task_name: str) -> list[Any]:
        """The filters (in order) that apply to ``task_name``; ``kind`` is data or result."""
        entries = self.data if kind == "data" else self.result
        return [f for e in entries if e.tasks is None or task_name in e.tasks for f in e.filters]

    def __bool__(self) -> bool:
        return bool(self.data or self.result)

    async def apply(self, stage: FilterStage, task_name: str, dxo: DXO, fl_ctx: Any) -> DXO:
        """Run the chain for ``stage`` on ``dxo`` in a thread; TaskFilterError if one fails."""
        kind = "data" if stage in (FilterStage.DATA_OUT, FilterStage.DATA_IN) else "result"
        filters = self.chain(kind, task_name)
        if not filters:
            return dxo
        if fl_ctx is None:  # a workflow that passed no context: the filters still get one
            fl_ctx = FLContext()
            fl_ctx.set_prop(FLContextKey.CLIENT_NAME, self.site, private=False)
        return await trio.to_thread.run_sync(self._run, filters, stage, task_name, dxo, fl_ctx)

    def _run(self, filters: list[Any], stage: FilterStage, task_name: str, dxo: DXO,
             fl_ctx: Any) -> DXO:
        for f in filters:
            before = len(dxo.history)
            what = type(f).__name__
            try:
                out = _call(f, dxo, fl_ctx)
            except Exception as exc:
                raise TaskFilterError(f"{stage.value} filter {what} failed on task "
                                      f"{task_name!r} at {self.site}: {type(exc).__name__}: "
                                      f"{exc}", stage.rc) from exc
            if not isinstance(out, DXO):
                raise TaskFilterError(f"{stage.value} filter {what} returned "
                                      f"{type(out).__name__}, not a DXO", stage.rc)
            dxo = self._tag(out, before, what, stage)
        return dxo

    def _tag(self, dxo: DXO, before: int, what: str, stage: FilterStage) -> DXO:
        history = dxo.history
        where = {"site": self.site, "stage": stage.value}
        if len(history) > before:
            history[-1] = {**history[-1], **where}
        else:
            history.append({"name": what, "args": {}, **where})
        meta = dict(dxo.meta)
        meta[MetaKey.FILTER_HISTORY] = history
        return dxo.replace(meta=meta)


def _call(f: Any, dxo: DXO, fl_ctx: Any) -> Any:
    """``f.process(dxo)`` or, for a reference-style filter, ``f.process(dxo, fl_ctx)``."""
    process = getattr(f, "process", None)
    if process is None:
        raise CellnetError(f"{type(f).__name__} has no process() method")
    try:
        params = inspect.signature(process).parameters
    except (TypeError, ValueError):
        params = {}
    if "fl_ctx" in params:
        return process(dxo, fl_ctx=fl_ctx)
    return process(dxo)


def _build(spec: Any, app_dir: Path, where: str) -> Any:
    if isinstance(spec, Mapping) and "path" in spec:
        f = load_component(dict(spec), app_dir, where)
    elif isinstance(spec, Mapping) and "name" in spec:
        try:
            f = make_filter(spec)
        except CellnetError as exc:
            raise JobError(f"{where}: {exc}") from exc
    else:
        raise JobError(f"{where}: a filter is {{'path': 'module.Class', 'args': {{...}}}} or "
                       f"{{'name': 'Quantize', 'args': {{...}}}}, got {spec!r}")
    if not callable(getattr(f, "process", None)):
        raise JobError(f"{where}: {type(f).__name__} has no process() method")
    return f


def _entries(raw: Any, app_dir: Path, key: str, config_name: str) -> list[_Entry]:
    if raw is None:
        return []
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise JobError(f"{config_name}: {key!r} must be a list of "
                       f"{{'tasks': [...], 'filters': [...]}}")
    out = []
    for n, entry in enumerate(raw):
        where = f"{config_name}: {key}[{n}]"
        if not isinstance(entry, Mapping) or set(entry) - {"tasks", "filters"}:
            raise JobError(f"{where}: needs exactly 'tasks' and 'filters', got {entry!r}")
        tasks = entry.get("tasks", ALL_TASKS)
        if tasks == ALL_TASKS or tasks == [ALL_TASKS]:
            names = None
        elif isinstance(tasks, list) and tasks and all(isinstance(t, str) and t for t in tasks):
            names = frozenset(tasks)
        else:
            raise JobError(f"{where}: 'tasks' must be '*' or a non-empty list of task names")
        specs = entry.get("filters")
        if not isinstance(specs, list) or not specs:
            raise JobError(f"{where}: 'filters' must be a non-empty list")
        out.append(_Entry(names, [_build(s, app_dir, f"{where}.filters[{i}]")
                                  for i, s in enumerate(specs)]))
    return out


def load_task_filters(config: Mapping[str, Any], app_dir: Path, site: str,
                      config_name: str = "app config") -> TaskFilters:
    """The filter chains named by an app config (JobError naming the bad entry)."""
    return TaskFilters(site,
                       _entries(config.get(DATA_KEY), app_dir, DATA_KEY, config_name),
                       _entries(config.get(RESULT_KEY), app_dir, RESULT_KEY, config_name))
