"""ClientAPIExecutor: a site executor that runs tasks in a separate training process.

The app's client config names it like any executor::

    {"executors": [{"tasks": ["train"], "executor": {
        "path": "cellnet.fl.runtime.agent_executor.ClientAPIExecutor",
        "args": {"command": "python train.py", "agent_id": "trainer",
                 "task_timeout": 600}}}]}

On its first task it starts ``command`` (run in the app's ``custom/``
folder) as a child process of the site job cell through
:mod:`cellnet.fl.runtime.agent_launch`; the script's cell is
``agent_site_fqcn(site, agent_id, job_id)`` and links to the job cell (the
script uses :class:`cellnet.client.FlareAgent` or ``cellnet.client.init()``).
The process then serves one task after another: each is pushed to the
agent, and the result it submits is the task's result.

Failures come back as the task's ``EXECUTION_EXCEPTION`` with a readable
reason: the script exited (its exit status and the tail of its standard
error -- the Python traceback), sent no result within ``task_timeout``
seconds, or answered a non-OK return code.  The reason is also reported to
the server as a job error (``show_errors``) while the job goes on, so the
workflow decides what a failed site means.  A failed, timed-out or aborted
task stops the process (SIGTERM, then SIGKILL after ``stop_grace``); the
next task starts a fresh one.  When the job ends, the job cell's node stops
its children.
"""

from __future__ import annotations

import logging
import math
import shlex
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import trio

from cellnet.client import _proto as AP
from cellnet.defs import FLContextKey, RunStatus
from cellnet.errors import CellnetError, JobError, LinkError
from cellnet.fl.dxo import DXO
from cellnet.fl.runtime.context import FLContext
from cellnet.fl.runtime.executor import Executor, Signal
from cellnet.fl.runtime.reports import report_to_server
from cellnet.fqcn import agent_site_fqcn, validate_part
from cellnet.message import Message

__all__ = ["ClientAPIExecutor", "TrainingProcessError", "stderr_tail"]

log = logging.getLogger("cellnet.fl.agent")
TRACEBACK = "Traceback (most recent call last):"


class TrainingProcessError(JobError):
    """The training process failed a task (exited, timed out, or answered an error)."""


def stderr_tail(path: Path, start: int = 0, limit: int = 8000) -> str:
    """The end of ``path`` after byte ``start``: from its last Python traceback if there is one."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(start, size - limit))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no standard error: {exc})"
    at = text.rfind(TRACEBACK)
    return (text[at:] if at >= 0 else text).strip()


def _positive(value: Any, what: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or math.isnan(value):
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


@dataclass
class _Waiting:
    task_id: str
    done: trio.Event = field(default_factory=trio.Event)
    reply: Message | None = None


#: cell -> {agent fqcn: executor}: the one ``result`` handler of a job cell dispatches by origin.
_ROUTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def _on_result(cell: Any, msg: Message) -> Message:
    executor = _ROUTES.get(cell, {}).get(msg.origin)
    if executor is None:
        return Message({"cellnet.return_code": "authentication_error",
                        "cellnet.error": f"{msg.origin} is not a training agent of this cell"})
    return executor._take_result(msg)


class ClientAPIExecutor(Executor):
    """Runs tasks in a training script that uses ``cellnet.client`` (see the module docstring)."""

    engine: Any = None  # set by the job cell

    def __init__(self, command: str = "python train.py", agent_id: str = "agent",
                 task_timeout: float | None = None, start_timeout: float = 30.0,
                 stop_grace: float = 3.0, push_timeout: float = 60.0) -> None:
        if not isinstance(command, str) or not shlex.split(command):
            raise ValueError(f"command must be a non-empty command line, got {command!r}")
        self.command = shlex.split(command)
        self.agent_id = validate_part(agent_id)
        self.task_timeout = _positive(task_timeout, "task_timeout", allow_none=True)
        self.start_timeout = _positive(start_timeout, "start_timeout")
        self.stop_grace = _positive(stop_grace, "stop_grace")
        self.push_timeout = _positive(push_timeout, "push_timeout")
        self.child: Any = None  # the running ChildCell, if any
        self.launches = 0
        self._lock = trio.Lock()
        self._waiting: _Waiting | None = None
        self._log_start = 0

    # --- process --------------------------------------------------------------------
    def _engine(self, fl_ctx: FLContext) -> Any:
        engine = self.engine if self.engine is not None else fl_ctx.get_engine()
        if engine is None or getattr(engine, "node", None) is None:
            raise JobError("ClientAPIExecutor runs in a site job cell (it needs engine.node)")
        return engine

    def agent_fqcn(self, engine: Any) -> str:
        return agent_site_fqcn(engine.session.client_name, self.agent_id, engine.job_id)

    def log_path(self, engine: Any) -> Path:
        """Where the script's standard error goes: ``<job folder>/<agent_id>.stderr.log``."""
        return Path(engine.app_dir).parent / f"{self.agent_id}.stderr.log"

    async def _ensure_process(self, engine: Any) -> Any:
        if self.child is not None and self.child.returncode is None:
            return self.child
        cell = engine.cell
        if cell not in _ROUTES:
            async def on_result(msg: Message) -> Message:
                return await _on_result(cell, msg)
            cell.register_request_cb(AP.AGENT_CHANNEL, AP.AgentTopic.RESULT, on_result)
        _ROUTES.setdefault(cell, {})[self.agent_fqcn(engine)] = self
        errfile = self.log_path(engine)
        self._log_start = errfile.stat().st_size if errfile.exists() else 0
        argv = [sys.executable, "-m", "cellnet.fl.runtime.agent_launch",
                "--cwd", str(Path(engine.app_dir) / "custom"), "--stderr", str(errfile),
                "--", *self.command]
        self.launches += 1
        node = engine.node
        try:
            self.child = await node.start_child(self.agent_id, argv, timeout=self.start_timeout)
        except (LinkError, trio.TooSlowError) as exc:
            self.child = node.children.get(self.agent_fqcn(engine))
            await self.stop_process()
            why = "did not link to the job cell in time" if isinstance(
                exc, trio.TooSlowError) else str(exc)
            raise TrainingProcessError(self._failure(engine, f"{why}")) from None
        log.info("training process %s started (pid %d)", self.child.fqcn, self.child.pid)
        return self.child

    async def stop_process(self) -> None:
        """Stop the training process (SIGTERM, SIGKILL after ``stop_grace``); shielded."""
        child = self.child
        if child is None or child.returncode is not None:
            return
        with trio.CancelScope(shield=True):
            child.process.terminate()
            with trio.move_on_after(self.stop_grace):
                await child.process.wait()
            if child.returncode is None:
                child.process.kill()
                await child.process.wait()
        log.info("training process %s stopped", child.fqcn)

    def _failure(self, engine: Any, what: str) -> str:
        code = self.child.returncode if self.child is not None else None
        status = f" (exit status {code})" if code is not None else ""
        tail = stderr_tail(self.log_path(engine), self._log_start)
        return (f"training script {shlex.join(self.command)!r} of {self.agent_fqcn(engine)}: "
                f"{what}{status}; its standard error ends with:\n{tail or '(nothing)'}")

    # --- tasks ----------------------------------------------------------------------
    async def execute(self, task_name: str, dxo: DXO, fl_ctx: FLContext,
                      abort_signal: Signal) -> DXO:
        engine = self._engine(fl_ctx)
        task_id = str(fl_ctx.get_prop(FLContextKey.TASK_ID) or f"{task_name}-{self.launches}")
        async with self._lock:
            done = False
            try:
                result = await self._run_task(engine, task_name, task_id, dxo)
                done = True
                return result
            except TrainingProcessError as exc:
                await self._report(engine, str(exc))
                raise
            finally:
                if not done:  # failed, timed out, aborted (cancelled): no process lingers
                    await self._tell_abort(engine, task_id)
                    await self.stop_process()

    async def _run_task(self, engine: Any, name: str, task_id: str, dxo: DXO) -> DXO:
        child = await self._ensure_process(engine)
        waiting = self._waiting = _Waiting(task_id)
        try:
            reply = await engine.cell.send_request(
                child.fqcn, AP.AGENT_CHANNEL, AP.AgentTopic.TASK,
                AP.task_message(name, task_id, dxo), self.push_timeout)
            if reply.return_code != "ok" and child.returncode is None:
                raise TrainingProcessError(self._failure(
                    engine, f"did not take the task ({reply.return_code}: {reply.error})"))
            async with trio.open_nursery() as nursery:
                async def exited() -> None:
                    await child.process.wait()
                    nursery.cancel_scope.cancel()
                nursery.start_soon(exited)
                with trio.move_on_after(self.task_timeout or math.inf):
                    await waiting.done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._waiting = None
        return self._result(engine, waiting, child)

    def _result(self, engine: Any, waiting: _Waiting, child: Any) -> DXO:
        msg = waiting.reply
        if msg is None:
            if child.returncode is not None:
                what = "exited before sending a result"
            else:
                what = f"sent no result within task_timeout={self.task_timeout:g} s"
            raise TrainingProcessError(self._failure(engine, what))
        rc = msg.get_header(AP.TASK_RC)
        if rc != "OK":
            raise TrainingProcessError(self._failure(engine, f"answered the task with {rc}"))
        if msg.payload is None:
            raise TrainingProcessError(f"{child.fqcn} sent a result without data")
        try:
            return DXO.from_bytes(msg.payload)
        except (CellnetError, TypeError, ValueError) as exc:
            raise TrainingProcessError(f"{child.fqcn} sent an unreadable result: {exc}") from exc

    def _take_result(self, msg: Message) -> Message:
        waiting = self._waiting
        task_id = msg.get_header(AP.TASK_ID)
        if waiting is None or waiting.task_id != task_id or waiting.done.is_set():
            doc = {"accepted": False, "reason": f"task {task_id} is not expected here "
                   "(aborted, timed out or unknown)"}
        else:
            waiting.reply = msg
            waiting.done.set()
            doc = {"accepted": True, "reason": ""}
        return Message({}, cbor2.dumps(doc))

    async def _tell_abort(self, engine: Any, task_id: str) -> None:
        child = self.child
        if child is None or child.returncode is not None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await engine.cell.fire_and_forget(child.fqcn, AP.AGENT_CHANNEL, AP.AgentTopic.ABORT,
                                              Message({AP.TASK_ID: task_id}))

    async def _report(self, engine: Any, error: str) -> None:
        """Record ``error`` at the server for ``show_errors``; the job goes on (status RUNNING)."""
        with trio.move_on_after(10):
            await report_to_server(engine, {"job_id": engine.job_id, "error": error,
                                            "status": RunStatus.RUNNING.value})
