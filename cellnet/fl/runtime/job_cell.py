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

Classes come from the app's ``custom/`` folder (put first on ``sys.path``)
or any installed module.  An error that ends the program is reported to the
server (traceback) before the process exits with status 1.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from cellnet.defs import FLContextKey, ReservedKey, RunStatus
from cellnet.errors import JobError
from cellnet.fl.runtime import _proto as P
from cellnet.fl.runtime.context import FLContext
from cellnet.fl.runtime.executor import ExecutorRunner
from cellnet.fl.runtime.session import SERVER_CLIENT, Session, SessionCheck, cmi_headers
from cellnet.message import Message
from cellnet.node import CellNode

__all__ = ["JobEngine", "load_component", "main"]

log = logging.getLogger("cellnet.fl.job_cell")
SERVER_CONFIG = "config/config_fed_server.json"
CLIENT_CONFIG = "config/config_fed_client.json"


@dataclass
class JobEngine:
    """What workflows and executors reach: the cell, the session and the job's participants."""

    cell: Any
    session: Session
    peer_check: SessionCheck | None
    job_id: str
    clients: list[str]
    app_dir: Path
    node: Any = None  # the job cell's CellNode (child processes: training agents)


def load_component(spec: Any, app_dir: Path, what: str) -> Any:
    """Instantiate ``{"path": "module.Class", "args": {...}}`` (``custom/`` first on sys.path)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) \
            or "." not in spec["path"]:
        raise JobError(f"{what}: needs {{'path': 'module.Class', 'args': {{...}}}}, got {spec!r}")
    args = spec.get("args", {})
    if not isinstance(args, dict):
        raise JobError(f"{what}: 'args' must be an object")
    custom = str(app_dir / "custom")
    if (app_dir / "custom").is_dir() and custom not in sys.path:
        sys.path.insert(0, custom)
    module_name, _, cls_name = spec["path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise JobError(f"{what}: cannot load {spec['path']!r}: {exc}") from exc
    return cls(**args)


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


async def _report(engine: JobEngine, doc: dict[str, Any]) -> None:
    msg = Message(cmi_headers(engine.session, engine.job_id), P.dumps(doc))
    reply = await engine.cell.send_request(SERVER_CLIENT, P.RUNTIME_CHANNEL,
                                           P.RuntimeTopic.JOB_REPORT, msg, 10.0)
    if reply.return_code != "ok":
        log.error("the server did not take the job report: %s", reply.error)


async def _run_server(engine: JobEngine) -> dict[str, Any]:
    cfg = _app_config(engine.app_dir, SERVER_CONFIG)
    workflow = load_component(cfg.get("workflow"), engine.app_dir, "workflow")
    workflow.engine = engine
    results = await workflow.control_flow(_fl_ctx(engine))
    await workflow.end_run()
    return {"status": RunStatus.FINISHED_COMPLETED.value, "results": results}


async def _run_client(engine: JobEngine) -> None:
    cfg = _app_config(engine.app_dir, CLIENT_CONFIG)
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
    runner = ExecutorRunner(engine, engine.job_id, executors)
    runner.register()
    await runner.ended.wait()


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
