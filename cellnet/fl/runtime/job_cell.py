"""The program of a job cell process: ``python -m cellnet.fl.runtime.job_cell CONFIG``.

The parent (the server, or a site) writes ``CONFIG`` (JSON: job id, role,
app folder, session, the job's clients and their tokens) and starts this
program with :meth:`cellnet.node.CellNode.start_child`.  The cell links back
to its parent, then:

* ``role == "server"``: loads the workflow named by the app's
  ``config/config_fed_server.json`` (``{"workflow": {"path": "mod.Class",
  "args": {...}}}``), runs its ``control_flow``, sends ``__end_run__`` to the
  sites, and reports ``FINISHED:COMPLETED`` with the results (or
  ``FINISHED:EXECUTION_EXCEPTION`` with the traceback) to the server.
* ``role == "client"``: loads the executors of ``config/config_fed_client.json``
  (``{"executors": [{"tasks": [...], "executor": {...}}]}``), serves tasks
  until ``__end_run__``.

Both configs may also list ``"components"`` (``{"id", "path", "args"}``;
those with ``handle_event`` get every event) and the task filter chains
``"task_data_filters"``/``"task_result_filters"``
(:mod:`cellnet.fl.runtime.task_filters`).  The workflow, executors and
components reach the job's :class:`~cellnet.fl.runtime.events.EventBus`
through the engine (``fire_event``/``fire_fed_event``); ``START_RUN`` and
``END_RUN`` are fired locally around the run.

Classes come from the app's ``custom/`` folder (put first on ``sys.path``)
or any installed module.  An error that ends the program is reported to the
server (traceback) before the process exits with status 1.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from cellnet.defs import FLContextKey, ReservedKey, RunStatus
from cellnet.errors import JobError
from cellnet.fl.runtime.components import load_component
from cellnet.fl.runtime.context import FLContext
from cellnet.fl.runtime.events import EventBus, EventType
from cellnet.fl.runtime.executor import ExecutorRunner
from cellnet.fl.runtime.reports import report_to_server as _report
from cellnet.fl.runtime.session import Session, SessionCheck
from cellnet.fl.runtime.task_filters import TaskFilters, load_task_filters
from cellnet.node import CellNode

__all__ = ["JobEngine", "load_component", "main"]

log = logging.getLogger("cellnet.fl.job_cell")
SERVER_CONFIG = "config/config_fed_server.json"
CLIENT_CONFIG = "config/config_fed_client.json"


@dataclass
class JobEngine:
    """What workflows, executors and filters reach: cell, session, participants, filters, events."""

    cell: Any
    session: Session
    peer_check: SessionCheck | None
    job_id: str
    clients: list[str]
    app_dir: Path
    node: Any = None  # the job cell's CellNode (child processes: training agents)
    filters: TaskFilters = field(default_factory=TaskFilters)
    events: EventBus = field(default_factory=EventBus)
    components: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.events.engine = self

    async def fire_event(self, event_type: str, fl_ctx: FLContext | None = None) -> int:
        """Run this job cell's handlers of ``event_type`` (see :mod:`...events`)."""
        return await self.events.fire_event(event_type, fl_ctx)

    async def fire_fed_event(self, event_type: str, data: Any = None,
                             fl_ctx: FLContext | None = None,
                             targets: list[str] | None = None) -> dict[str, str]:
        """Fire ``event_type`` here and, without waiting, in the other job cells."""
        return await self.events.fire_fed_event(event_type, data, fl_ctx, targets)

    def setup(self, cfg: dict[str, Any], config_name: str) -> None:
        """Load the app's task filters and components; register event handlers."""
        self.filters = load_task_filters(cfg, self.app_dir, self.session.client_name,
                                         config_name)
        raw = cfg.get("components", [])
        if not isinstance(raw, list):
            raise JobError(f"{config_name}: 'components' must be a list")
        for n, spec in enumerate(raw):
            cid = spec.get("id") if isinstance(spec, dict) else None
            if not isinstance(cid, str) or not cid or cid in self.components:
                raise JobError(f"{config_name}: components[{n}] needs a unique 'id'")
            comp = load_component({k: v for k, v in spec.items() if k != "id"}, self.app_dir,
                                  f"components[{n}]")
            self.components[cid] = comp
            self.add_handler(comp)

    def add_handler(self, component: Any) -> None:
        """Register ``component`` for every event if it has ``handle_event``."""
        if callable(getattr(component, "handle_event", None)):
            self.events.register(component)


def _app_config(app_dir: Path, name: str) -> dict[str, Any]:
    path = app_dir / name
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise JobError(f"{path}: cannot read the app config: {exc}") from exc
    if not isinstance(doc, dict):
        raise JobError(f"{path}: must be a JSON object")
    return doc


def _fl_ctx(engine: JobEngine) -> FLContext:
    ctx = FLContext()
    ctx.set_prop(FLContextKey.CURRENT_JOB_ID, engine.job_id, private=False)
    ctx.set_prop(FLContextKey.CLIENT_NAME, engine.session.client_name, private=False)
    ctx.set_prop(ReservedKey.IDENTITY_NAME, engine.session.client_name, private=False)
    ctx.set_prop(FLContextKey.APP_ROOT, str(engine.app_dir), private=False)
    ctx.set_prop(FLContextKey.CURRENT_RUN, engine.job_id, private=False)
    ctx.set_prop(ReservedKey.ENGINE, engine)
    return ctx


async def _run_server(engine: JobEngine) -> dict[str, Any]:
    cfg = _app_config(engine.app_dir, SERVER_CONFIG)
    engine.setup(cfg, SERVER_CONFIG)
    workflow = load_component(cfg.get("workflow"), engine.app_dir, "workflow")
    workflow.engine = engine
    engine.add_handler(workflow)
    await engine.fire_event(EventType.START_RUN, _fl_ctx(engine))
    results = await workflow.control_flow(_fl_ctx(engine))
    await workflow.end_run()
    await engine.fire_event(EventType.END_RUN, _fl_ctx(engine))
    return {"status": RunStatus.FINISHED_COMPLETED.value, "results": results}


async def _run_client(engine: JobEngine) -> None:
    cfg = _app_config(engine.app_dir, CLIENT_CONFIG)
    engine.setup(cfg, CLIENT_CONFIG)
    entries = cfg.get("executors")
    if not isinstance(entries, list) or not entries:
        raise JobError(f"{CLIENT_CONFIG}: 'executors' must be a non-empty list")
    executors = {}
    for n, entry in enumerate(entries):
        tasks = entry.get("tasks") if isinstance(entry, dict) else None
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise JobError(f"{CLIENT_CONFIG}: executors[{n}].tasks must be a list of names")
        ex = load_component(entry.get("executor"), engine.app_dir, f"executors[{n}]")
        ex.engine = engine
        executors.update(dict.fromkeys(tasks, ex))
    for ex in {id(e): e for e in executors.values()}.values():
        engine.add_handler(ex)
    runner = ExecutorRunner(engine, engine.job_id, executors)
    runner.register()
    await engine.fire_event(EventType.START_RUN, _fl_ctx(engine))
    await runner.ended.wait()
    await engine.fire_event(EventType.END_RUN, _fl_ctx(engine))


async def run(config: dict[str, Any]) -> int:
    """Run one job cell from its config; the exit status."""
    session = Session.from_dict(config["session"])
    job_id, role = config["job_id"], config["role"]
    tokens = config.get("tokens") or {}
    check = SessionCheck(session.project, session.ssid, tokens, job_id)
    async with CellNode.from_child_env() as node:
        await node.wait_connected(30)
        engine = JobEngine(node.cell, session, check, job_id, list(config.get("clients", [])),
                           Path(config["app_dir"]), node)
        async with trio.open_nursery() as events:
            engine.events.serve(events)
            try:
                if role == "server":
                    await _report(engine, await _run_server(engine))
                else:
                    await _run_client(engine)
            except Exception:
                error = traceback.format_exc()
                log.error("job %s (%s) failed:\n%s", job_id, role, error)
                with trio.move_on_after(10):
                    await _report(engine, {"status": RunStatus.FINISHED_EXECUTION_EXCEPTION.value,
                                           "error": error})
                return 1
            finally:
                events.cancel_scope.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cellnet.fl.runtime.job_cell CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    config = json.loads(Path(args[0]).read_text())
    return trio.run(run, config)


if __name__ == "__main__":
    sys.exit(main())
