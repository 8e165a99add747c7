"""Site side of the runtime: log in, reserve resources, receive apps, run job cells as children.

A :class:`SiteRunner` wraps a running site :class:`~cellnet.node.CellNode`.
:meth:`SiteRunner.login` asks the server for a session (token + SSID) and
reports the site's resources; the reply names the site's jobs the server
still runs, and any other job process here (left over from before a server
restart) is stopped.  :meth:`SiteRunner.stay_logged_in` logs in again
whenever the link to the server comes back.  The server then drives the site on the
runtime channel -- every request must come from ``server`` with the live
SSID, else ``invalid_session``:

* ``check_resources``: reserve a job's resource spec if it fits what is free
  (or refuse, saying why); ``cancel_resources`` gives it back;
* ``deploy``: verify the app zip against its SHA-256, unpack it under the
  site workspace and start the job cell ``<site>.<job_id>`` as a child
  process; the reply comes once the child has linked;
* ``abort_job``: stop the job's process (also while it is still starting)
  and wait until it has exited.

When a job process exits the site reports ``job_exited`` (with the exit
status) to the server and frees the job's reservation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from cellnet.defs import CellReturnCode, CMIHeader
from cellnet.errors import AuthError, CellnetError, JobError
from cellnet.fl.job_folder import unzip_job
from cellnet.fl.runtime import _proto as P
from cellnet.fl.runtime._tasks import spawn_guarded
from cellnet.fl.runtime.session import SERVER_CLIENT, Session, cmi_headers
from cellnet.message import Message
from cellnet.node import CellNode, ChildCell

__all__ = ["SiteRunner"]

log = logging.getLogger("cellnet.fl.site")
#: Seconds a job process gets after SIGTERM before SIGKILL on abort.
ABORT_GRACE = 3.0


@dataclass
class _SiteJob:
    job_id: str
    reserved: dict[str, float] = field(default_factory=dict)
    scope: trio.CancelScope | None = None
    child: ChildCell | None = None
    aborted: bool = False
    exited: trio.Event = field(default_factory=trio.Event)
    #: set when a deploy's start-up is over (its child known, or not started at all)
    settled: trio.Event = field(default_factory=trio.Event)


class SiteRunner:
    """The job runtime of one site (see the module docstring); ``async with`` it."""

    def __init__(self, node: CellNode, resources: Mapping[str, float] | None = None,
                 workspace: str | Path | None = None, start_timeout: float = 30.0) -> None:
        self.node = node
        self.name = node.fqcn
        self.capacity = {str(k): float(v) for k, v in (resources or {}).items()}
        root = workspace if workspace is not None else (
            node.workspace.root if node.workspace is not None else None)
        if root is None:
            raise ValueError("SiteRunner needs a workspace folder (or a node with one)")
        self.root = Path(root)
        self.start_timeout = start_timeout
        self.session: Session | None = None
        self.jobs: dict[str, _SiteJob] = {}
        self._aborted: set[str] = set()  # a deploy arriving after its abort is refused
        self._nursery: trio.Nursery | None = None
        self._cm: Any = None

    async def __aenter__(self) -> SiteRunner:
        self._cm = trio.open_nursery()
        self._nursery = await self._cm.__aenter__()
        cell = self.node.cell
        for topic, fn in ((P.RuntimeTopic.CHECK_RESOURCES, self._check_resources),
                          (P.RuntimeTopic.CANCEL_RESOURCES, self._cancel_resources),
                          (P.RuntimeTopic.DEPLOY, self._deploy),
                          (P.RuntimeTopic.ABORT_JOB, self._abort)):
            cell.register_request_cb(P.RUNTIME_CHANNEL, topic, self._from_server(fn))
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._nursery is not None
        with trio.CancelScope(shield=True), trio.move_on_after(ABORT_GRACE + 2):
            for job in list(self.jobs.values()):
                await self._stop(job)
        self._nursery.cancel_scope.cancel()
        return await self._cm.__aexit__(*exc)

    # --- session --------------------------------------------------------------------
    async def login(self, timeout: float = 10.0) -> Session:
        """Log in to the server: a token and the server's SSID (AuthError if refused)."""
        await self.node.wait_connected(timeout)
        reply = await self.node.cell.send_request(
            SERVER_CLIENT, P.RUNTIME_CHANNEL, P.RuntimeTopic.LOGIN,
            P.dumps({"resources": self.capacity}), timeout)
        if reply.return_code != CellReturnCode.OK:
            raise AuthError(f"login of {self.name} refused: {reply.return_code}: {reply.error}")
        doc = P.loads(reply, "login reply")
        self.session = Session.from_dict(doc)
        live = set(doc.get("jobs") or ())
        for job in [j for j in self.jobs.values() if j.child is not None and j.job_id not in live]:
            log.warning("job %s is not active on the server (restarted?): stopping it", job.job_id)
            assert self._nursery is not None
            spawn_guarded(self._nursery, log, self._stop, job)
        return self.session

    async def stay_logged_in(self, retry: float = 1.0, *,
                             task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Log in, and again whenever the link to the server comes back (runs forever).

        ``task_status.started()`` is called after the first successful login;
        a refused or timed-out login is logged and retried every ``retry`` seconds.
        """
        started = False
        while True:
            await self.node.wait_connected()
            try:
                session = await self.login()
            except (CellnetError, trio.TooSlowError) as exc:
                log.warning("login of %s failed: %s; retrying in %g s", self.name, exc, retry)
                await trio.sleep(retry)
                continue
            log.info("site %s logged in to the server (session %s)", self.name, session.ssid)
            if not started:
                task_status.started(session)
                started = True
            link = self.node.cell.get_link(SERVER_CLIENT)
            if link is not None:
                await link.finished.wait()

    def _from_server(self, fn: Any) -> Any:
        async def serve(msg: Message) -> Message:
            if msg.origin != SERVER_CLIENT:
                return P.error_reply(CellReturnCode.AUTHENTICATION_ERROR,
                                     f"runtime requests come from the server, not {msg.origin}")
            if self.session is None or \
                    msg.get_header(CMIHeader.HEADER_SSID) != self.session.ssid:
                return P.error_reply(CellReturnCode.INVALID_SESSION,
                                     "stale server session: log in again")
            try:
                return await fn(P.loads(msg, msg.topic or "request"))
            except (CellnetError, KeyError, TypeError, ValueError) as exc:
                return P.error_reply(CellReturnCode.INVALID_REQUEST,
                                     f"{type(exc).__name__}: {exc}")
        return serve

    # --- resources ------------------------------------------------------------------
    def free(self) -> dict[str, float]:
        free = dict(self.capacity)
        for job in self.jobs.values():
            for res, amount in job.reserved.items():
                free[res] = free.get(res, 0.0) - amount
        return free

    async def _check_resources(self, doc: dict[str, Any]) -> Message:
        job_id, need = str(doc["job_id"]), dict(doc.get("resources") or {})
        if job_id in self.jobs and self.jobs[job_id].reserved:
            return P.ok_reply({"ok": True})
        free = self.free()
        for res, amount in sorted(need.items()):
            if float(amount) > free.get(res, 0.0):
                return P.ok_reply({"ok": False, "reason": f"{res}: needs {amount:g}, "
                                   f"{free.get(res, 0.0):g} free"})
        job = self.jobs.setdefault(job_id, _SiteJob(job_id))
        job.reserved = {str(k): float(v) for k, v in need.items()}
        return P.ok_reply({"ok": True})

    async def _cancel_resources(self, doc: dict[str, Any]) -> Message:
        job = self.jobs.get(str(doc["job_id"]))
        if job is not None and job.child is None and job.scope is None:
            del self.jobs[job.job_id]
        return P.ok_reply()

    # --- deploy / run ---------------------------------------------------------------
    async def _deploy(self, doc: dict[str, Any]) -> Message:
        job_id, app = str(doc["job_id"]), bytes(doc["app"])
        if hashlib.sha256(app).hexdigest() != doc["sha256"]:
            raise JobError(f"job {job_id}: app content fails its SHA-256 check")
        if job_id in self._aborted:
            raise JobError(f"job {job_id} was aborted on {self.name}")
        job = self.jobs.setdefault(job_id, _SiteJob(job_id))
        if job.child is not None or job.scope is not None:
            raise JobError(f"job {job_id} is already deployed on {self.name}")
        job_dir = self.root / job_id
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True)
        app_dir = unzip_job(app, job_dir / "app")
        config = {"job_id": job_id, "role": "client", "app_dir": str(app_dir),
                  "session": self.session.to_dict(), "tokens": {SERVER_CLIENT: None},
                  "clients": list(doc.get("clients") or [])}
        (job_dir / "job_config.json").write_text(json.dumps(config))
        argv = [sys.executable, "-m", "cellnet.fl.runtime.job_cell",
                str(job_dir / "job_config.json")]
        with trio.CancelScope() as scope:
            job.scope = scope
            try:
                job.child = await self.node.start_child(job_id, argv,
                                                        timeout=self.start_timeout)
            finally:
                job.scope = None
                child = self.node.children.get(f"{self.name}.{job_id}")
                if job.child is None and child is not None:
                    job.child = child  # started, but the wait for its link was cut short
                if job.child is not None:
                    assert self._nursery is not None
                    spawn_guarded(self._nursery, log, self._watch, job)
                job.settled.set()
        if job.aborted:
            raise JobError(f"job {job_id} was aborted while starting")
        return P.ok_reply({"pid": job.child.pid if job.child else None})

    async def _watch(self, job: _SiteJob) -> None:
        assert job.child is not None
        code = await job.child.process.wait()
        job.exited.set()
        self.jobs.pop(job.job_id, None)
        log.info("job %s process on %s exited with status %s", job.job_id, self.name, code)
        if self.session is None:
            return
        msg = Message(cmi_headers(self.session, job.job_id),
                      P.dumps({"job_id": job.job_id, "returncode": code, "aborted": job.aborted}))
        with trio.move_on_after(10):
            await self.node.cell.send_request(SERVER_CLIENT, P.RUNTIME_CHANNEL,
                                              P.RuntimeTopic.JOB_EXITED, msg, 10.0)

    async def _stop(self, job: _SiteJob) -> None:
        job.aborted = True
        if job.scope is not None:  # still starting: cut it short, then stop what it started
            job.scope.cancel()
            with trio.move_on_after(ABORT_GRACE):
                await job.settled.wait()
        child = job.child or self.node.children.get(f"{self.name}.{job.job_id}")
        if child is None or child.returncode is not None:
            self.jobs.pop(job.job_id, None)
            return
        child.process.terminate()
        with trio.move_on_after(ABORT_GRACE):
            await child.process.wait()
        if child.returncode is None:
            child.process.kill()
            await child.process.wait()

    async def _abort(self, doc: dict[str, Any]) -> Message:
        self._aborted.add(str(doc["job_id"]))
        job = self.jobs.get(str(doc["job_id"]))
        if job is None:
            return P.ok_reply({"running": False})
        await self._stop(job)
        return P.ok_reply({"running": True})
