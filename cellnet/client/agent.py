"""FlareAgent: the blocking task API of a training process, on a cell in a trio thread.

A training script is a separate process started by its site's job cell
(:class:`~cellnet.fl.runtime.agent_executor.ClientAPIExecutor`); its cell is
``agent_site_fqcn(site, agent_id, job_id)`` and links to the job cell with
the site's startup kit, through the environment the job cell passes
(:meth:`cellnet.node.CellNode.from_child_env`).  ``FlareAgent()`` runs that
cell in a daemon thread of its own (``trio.run``); the blocking methods hop
into it with ``trio.from_thread`` and run the :class:`AgentCore` coroutines.

``FlareAgent(cell=..., parent=...)`` instead serves an existing cell of a
trio program it is created in (the agent then makes no thread; the blocking
methods must be called from other threads, as with :class:`~cellnet.bridge.CellBridge`).

When the link to the job cell is lost (the job ended or was aborted and
its process is gone), the agent closes: ``get_task`` raises
:class:`AgentClosed`.  If the training process has not exited
``orphan_grace`` seconds later -- it is busy training for a job that no
longer exists -- the agent ends it with SIGTERM, so no process is left over.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import threading
from collections.abc import Mapping
from typing import Any

import trio

from cellnet import fqcn as _fqcn
from cellnet.node import CellNode
from cellnet.node._children import ENV_FQCN, ENV_HOST, ENV_KIT, ENV_PORT

from ._core import AgentCore
from .defs import AgentClosed, CallStateError, Task, TaskResult

__all__ = ["FlareAgent"]

log = logging.getLogger("cellnet.client")


def _seconds(value: Any, what: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be >= 0 seconds, got {value!r}")
    return float(value)


class FlareAgent:
    """The training process's end of a job cell (see the module docstring).

    ``submit_timeout`` bounds one delivery attempt of a result,
    ``retry_interval`` is the pause between attempts, ``connect_timeout``
    bounds :meth:`start`, ``orphan_grace`` (None: never) is how long the
    process may outlive its job cell.
    """

    def __init__(self, *, cell: Any = None, parent: str | None = None,
                 env: Mapping[str, str] | None = None, connect_timeout: float = 30.0,
                 submit_timeout: float = 60.0, retry_interval: float = 0.5,
                 orphan_grace: float | None = 3.0) -> None:
        self.connect_timeout = _seconds(connect_timeout, "connect_timeout")
        self.submit_timeout = _seconds(submit_timeout, "submit_timeout")
        self.retry_interval = _seconds(retry_interval, "retry_interval")
        self.orphan_grace = _seconds(orphan_grace, "orphan_grace", allow_none=True)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stopping = False
        self._stop_event: trio.Event | None = None
        self._core: AgentCore | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        if cell is not None:
            if parent is None:
                raise ValueError("an agent on an existing cell needs parent= (its job cell)")
            try:
                self._token = trio.lowlevel.current_trio_token()
            except RuntimeError:
                raise RuntimeError("create FlareAgent(cell=...) inside the trio run of that "
                                   "cell") from None
            self.fqcn = cell.fqcn
            self._core = self._new_core(cell, _fqcn.validate(parent))
            self._env: dict[str, str] = {}
        else:
            self._env = dict(os.environ if env is None else env)
            missing = [n for n in (ENV_FQCN, ENV_HOST, ENV_PORT, ENV_KIT) if not self._env.get(n)]
            if missing:
                raise ValueError(f"not started by a site job cell: {', '.join(missing)} not set "
                                 f"(run the script through the job's ClientAPIExecutor)")
            self.fqcn = _fqcn.validate(self._env[ENV_FQCN])
        parts = _fqcn.split(self.fqcn)
        #: Site, job id and agent id, from ``<site>.<job_id>.<agent_id>``.
        self.site_name = parts[0]
        self.job_id = parts[1] if len(parts) == 3 else None
        self.agent_id = parts[-1]

    def __repr__(self) -> str:
        return f"<FlareAgent {self.fqcn}>"

    def _new_core(self, cell: Any, parent: str) -> AgentCore:
        core = AgentCore(cell, parent, submit_timeout=self.submit_timeout,
                         retry_interval=self.retry_interval)
        core.register()
        return core

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Link to the job cell (own-thread mode) and accept tasks; CallStateError if started."""
        with self._lock:
            if self._thread is not None or (self._core is not None and self._core.started):
                raise CallStateError("the agent is already started")
            if self._core is not None:  # on an existing cell
                self._sync(self._core.start)
                return
            self._thread = threading.Thread(target=self._thread_main, daemon=True,
                                            name=f"cellnet-agent-{self.agent_id}")
            self._thread.start()
        self._ready.wait(self.connect_timeout + 10)
        if self._failure is not None:
            raise self._failure
        if self._token is None:
            raise AgentClosed(f"agent {self.fqcn} could not start in "
                              f"{self.connect_timeout:g} s")

    def stop(self) -> None:
        """Close the agent (idempotent): no more tasks; pending calls end."""
        self._stopping = True
        if self._core is None or self._token is None:
            return
        try:
            self._sync(self._close, "the agent was stopped")
        except trio.RunFinishedError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.connect_timeout)

    def _close(self, reason: str) -> None:
        assert self._core is not None
        self._core.close(reason)
        if self._stop_event is not None:
            self._stop_event.set()

    @property
    def closed(self) -> bool:
        return self._core is not None and self._core.closed.is_set()

    def _thread_main(self) -> None:
        try:
            trio.run(self._amain)
        except BaseException as exc:  # reported by start() (or logged once running)
            if self._token is None:
                self._failure = exc
            else:
                log.error("agent %s failed: %s", self.fqcn, exc)
        finally:
            self._ready.set()

    async def _amain(self) -> None:
        node = CellNode.from_child_env(self._env, connect_timeout=self.connect_timeout)
        core = self._new_core(node.cell, node.uplink)
        self._stop_event = trio.Event()
        async with node:
            await node.wait_connected()  # the node fails with LinkError after connect_timeout
            core.start()
            self._core = core
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await core.closed.wait()
        core.close(f"lost the link to {node.uplink}")
        if self._stopping or self.orphan_grace is None:
            return
        with trio.move_on_after(self.orphan_grace):
            await self._stop_event.wait()
            return
        log.error("job cell %s is gone and this training process is still running after "
                  "%g s: terminating it", node.uplink, self.orphan_grace)
        os.kill(os.getpid(), signal.SIGTERM)

    # --- the task API -----------------------------------------------------------------
    def _sync(self, fn: Any, *args: Any) -> Any:
        try:
            in_trio = trio.lowlevel.current_trio_token() is self._token
        except RuntimeError:
            in_trio = False
        if in_trio:
            return fn(*args)
        return trio.from_thread.run_sync(functools.partial(fn, *args), trio_token=self._token)

    def _call(self, name: str, *args: Any) -> Any:
        if self._core is None or self._token is None:
            raise CallStateError("call start() first")
        afn = getattr(self._core, name)
        try:
            return trio.from_thread.run(functools.partial(afn, *args), trio_token=self._token)
        except trio.RunFinishedError:
            return None  # the agent's thread is gone: the caller decides

    def get_task(self, timeout: float | None = None) -> Task | None:
        """Block until a task comes (a :class:`Task`), ``timeout`` passes (None) or the agent
        closes (:class:`AgentClosed`).  Only when just started or after a submit_result."""
        timeout = _seconds(timeout, "timeout", allow_none=True)
        task = self._call("get_task", timeout)
        if task is None and self._thread_gone():
            core = self._core
            assert core is not None
            core.check_ready()  # CallStateError when holding a task, as while running
            raise AgentClosed(f"agent closed: {core.close_reason or 'its thread ended'}")
        return task

    def submit_result(self, result: TaskResult) -> bool:
        """Send the current task's result, retrying until delivered, aborted or closed.

        Once per task: returns whether the job cell took it.  CallStateError
        without a current task; TypeError/ValueError (nothing changes) for a
        bad result."""
        ok = self._call("submit", result)
        if ok is None:  # the agent's thread is gone; the task ends undelivered
            assert self._core is not None
            self._core.take_current(result)
            return False
        return ok

    def _thread_gone(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()
