"""Server side of the runtime: job admin over the network, scheduling, deployment, job status.

A :class:`ServerRunner` wraps the running server :class:`~cellnet.node.CellNode`
and a :class:`~cellnet.fl.JobStore`.

* **Job admin** (channel ``job``: ``submit``/``list``/``get``/``abort``/
  ``show_errors``): a submit is validated and stored (idempotent per submit
  token); the submitter's name, org and role come from the certificate of
  the link it arrived on (an admin's or a site's), recorded in the job meta.
* **Store I/O**: every job store write (they fsync) runs in a worker
  thread, one at a time, so the trio thread never waits on the disk.
* **Restart**: :meth:`JobStore.recover` runs on entry -- jobs that were
  RUNNING/DISPATCHED end FINISHED:ABNORMAL, SUBMITTED ones are scheduled;
  a site logging in learns which of its jobs are still active (it stops
  the others).
* **Sessions**: sites ``login`` and report their resources; only logged-in,
  linked sites count as connected.
* **Scheduling loop**: every ``poll_interval`` (or when something changes)
  :func:`~cellnet.fl.pick_jobs` decides; a started job reserves resources on
  its sites (a refusing site is remembered and the job waits), moves to
  DISPATCHED, its apps go to the sites (zip + SHA-256), the sites start their
  job cells, then the server starts ``server.<job_id>`` and the job is RUNNING.
* **Ending**: the server job cell reports FINISHED:COMPLETED (results saved)
  or FINISHED:EXECUTION_EXCEPTION (traceback); a job process that dies
  without a report ends the job FINISHED:ABNORMAL; ``abort`` ends it
  FINISHED:ABORTED.  Every ending stops all of the job's processes on every
  site within ``abort_timeout`` seconds.  Errors are kept for ``show_errors``
  and written into the status reason of the job's meta.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from cellnet.defs import CellReturnCode, CMIHeader, JobMetaKey, RunStatus
from cellnet.errors import AuthError, CellnetError, JobError, JobValidationError
from cellnet.fl.job_folder import unzip_job
from cellnet.fl.job_store import FINISHED_STATUSES, LEGAL_TRANSITIONS, JobStore, Submitter
from cellnet.fl.runtime import _proto as P
from cellnet.fl.runtime._tasks import spawn_guarded
from cellnet.fl.runtime.session import SERVER_CLIENT, SessionTable, cmi_headers
from cellnet.fl.scheduler import Action, pick_jobs
from cellnet.message import Message
from cellnet.node import CellNode, ChildCell
from cellnet.security.identity import identity_from_cert
from cellnet.security.names import Identity, site_part

__all__ = ["ServerRunner", "peer_identity"]

log = logging.getLogger("cellnet.fl.server")
S = RunStatus


@dataclass
class _Active:
    job_id: str
    sites: list[str] = field(default_factory=list)
    scope: trio.CancelScope | None = None
    child: ChildCell | None = None
    ending: bool = False
    done: trio.Event = field(default_factory=trio.Event)


class ServerRunner:
    """The job runtime of the server (see the module docstring); ``async with`` it."""

    def __init__(self, node: CellNode, store: JobStore, *, workspace: str | Path | None = None,
                 known_sites: list[str] | None = None, poll_interval: float = 0.5,
                 start_timeout: float = 30.0, abort_timeout: float = 10.0) -> None:
        self.node, self.store = node, store
        self.root = Path(workspace) if workspace is not None else store.root / "run"
        self.sessions = SessionTable(node.kit.project, known_sites)
        self.resources: dict[str, dict[str, float]] = {}
        self.poll_interval, self.start_timeout = poll_interval, start_timeout
        self.abort_timeout = abort_timeout
        self.active: dict[str, _Active] = {}
        self.refused: dict[str, set[str]] = {}
        self.progress: dict[str, dict[str, Any]] = {}  # latest workflow progress per job
        self._wake = trio.Event()
        self._store_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._cm: Any = None

    async def _io(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a job store call (it fsyncs) in a worker thread, one at a time."""
        async with self._store_lock:
            return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    @staticmethod
    async def _read(fn: Any, *args: Any) -> Any:
        """Run a job store read in a worker thread (files are replaced atomically)."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args))

    async def __aenter__(self) -> ServerRunner:
        # jobs RUNNING when the server died end ABNORMAL; SUBMITTED ones stay scheduled
        report = await self._io(self.store.recover)
        if report.abnormal:
            log.warning("jobs that were running when the server stopped: %s",
                        ", ".join(report.abnormal))
        self._cm = trio.open_nursery()
        self._nursery = await self._cm.__aenter__()
        cell = self.node.cell
        for topic, fn in ((P.JobTopic.SUBMIT, self._submit), (P.JobTopic.LIST, self._list),
                          (P.JobTopic.GET, self._get), (P.JobTopic.ABORT, self._abort),
                          (P.JobTopic.ERRORS, self._show_errors)):
            cell.register_request_cb(P.JOB_CHANNEL, topic, self._admin(fn))
        cell.register_request_cb(P.RUNTIME_CHANNEL, P.RuntimeTopic.LOGIN, self._login)
        cell.register_request_cb(P.RUNTIME_CHANNEL, P.RuntimeTopic.JOB_REPORT, self._report)
        cell.register_request_cb(P.RUNTIME_CHANNEL, P.RuntimeTopic.JOB_EXITED, self._exited)
        cell.register_request_cb(P.RUNTIME_CHANNEL, P.RuntimeTopic.JOB_PROGRESS, self._progress)
        self._nursery.start_soon(self._schedule_loop)
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._nursery is not None
        with trio.CancelScope(shield=True):
            for job_id in list(self.active):
                await self.finish(job_id, S.FINISHED_ABNORMAL, "server stopping")
        self._nursery.cancel_scope.cancel()
        return await self._cm.__aexit__(*exc)

    def wake(self) -> None:
        self._wake.set()

    # --- sessions -------------------------------------------------------------------
    def connected_sites(self) -> list[str]:
        peers = set(self.node.cell.peers)
        return [s for s in self.sessions.clients if s in peers]

    def _login(self, msg: Message) -> Message:
        try:
            origin = msg.origin or ""
            if origin != site_part(origin):
                raise AuthError(f"{origin!r} is not a site cell")
            doc = P.loads(msg, "login")
            session = self.sessions.login(origin)
        except (AuthError, JobError) as exc:
            return P.error_reply(CellReturnCode.AUTHENTICATION_ERROR, str(exc))
        res = doc.get("resources") or {}
        self.resources[origin] = {str(k): float(v) for k, v in res.items()}
        self.refused = {j: s - {origin} for j, s in self.refused.items()}
        log.info("site %s logged in (resources %s)", origin, self.resources[origin])
        self.wake()
        jobs = sorted(j for j, a in self.active.items() if origin in a.sites)
        return P.ok_reply({**session.to_dict(), "jobs": jobs})

    def _server_msg(self, doc: dict[str, Any], job_id: str | None = None) -> Message:
        return Message(cmi_headers(self.sessions.server_session(), job_id), P.dumps(doc))

    # --- job admin ------------------------------------------------------------------
    def _admin(self, fn: Any) -> Any:
        async def serve(msg: Message) -> Message:
            try:
                doc = P.loads(msg, msg.topic or "request")
                return P.ok_reply(await fn(doc, msg))
            except CellnetError as exc:
                reply = P.error_reply(CellReturnCode.INVALID_REQUEST, str(exc))
                problems = getattr(exc, "problems", None)
                reply.payload = P.dumps({"kind": type(exc).__name__, "problems": problems})
                return reply
        return serve

    async def _submit(self, doc: dict[str, Any], msg: Message) -> dict[str, Any]:
        content = doc.get("content")
        if not isinstance(content, bytes):
            raise JobValidationError("submit: 'content' (the job folder zip) is missing")
        submitter = self._submitter(msg.origin or "")
        known = self.sessions.known  # the project's sites, when the server was told them
        result = await self._io(self.store.submit, content,
                                submit_token=doc.get("submit_token"), submitter=submitter,
                                sites=sorted(known) if known is not None else None,
                                job_folder_name=str(doc.get("folder_name") or ""))
        self.wake()
        return {"job_id": result.job_id, "created": result.created,
                "warnings": list(result.warnings)}

    def _submitter(self, origin: str) -> Submitter:
        """Who submits: name, org and role from the verified certificate of the link."""
        identity = peer_identity(self.node.cell, origin)
        if identity is None:  # not a direct TLS peer: only its (verified) site is known
            return Submitter(name=site_part(origin) if origin else "")
        role = identity.role.value if identity.role is not None else ""
        return Submitter(name=identity.name, org=identity.org, role=role)

    async def _list(self, doc: dict[str, Any], msg: Message) -> dict[str, Any]:
        return {"jobs": [{"job_id": j.job_id, "name": j.meta.get(JobMetaKey.JOB_NAME),
                          "status": str(j.status)} for j in await self._read(self.store.list_jobs)]}

    async def _get(self, doc: dict[str, Any], msg: Message) -> dict[str, Any]:
        job_id = str(doc.get("job_id"))
        meta = await self._read(self.store.get_meta, job_id)
        # status polls ask for no results: they would read the results file every time
        results = await self._read(self.store.get_results, job_id) \
            if doc.get("results", True) else None
        return {"meta": json.loads(json.dumps(meta, default=str)), "results": results,
                "progress": self.progress.get(job_id)}

    async def _show_errors(self, doc: dict[str, Any], msg: Message) -> dict[str, Any]:
        job_id = str(doc.get("job_id"))
        return {"errors": await self._read(self.store.get_errors, job_id)}

    async def _abort(self, doc: dict[str, Any], msg: Message) -> dict[str, Any]:
        job_id = str(doc.get("job_id"))
        status = RunStatus((await self._read(self.store.get_meta, job_id))[JobMetaKey.STATUS])
        if status in FINISHED_STATUSES:
            raise JobError(f"job {job_id} has already ended ({status})")
        who = self._submitter(msg.origin or "")
        reason = f"aborted by {who.name}" + (f" ({who.org}, {who.role})" if who.role else "")
        if job_id in self.active:
            await self.finish(job_id, S.FINISHED_ABORTED, reason)
        else:
            await self._io(self.store.set_status, job_id, S.FINISHED_ABORTED, reason)
        return {"status": str((await self._read(self.store.get_meta, job_id))[JobMetaKey.STATUS])}

    # --- reports from job cells and sites ---------------------------------------------
    async def _record_error(self, job_id: str, who: str, error: str) -> None:
        await self._io(self.store.record_error, job_id, who, error)

    async def _report(self, msg: Message) -> Message:
        doc = P.loads(msg, "job report")
        job_id = str(doc.get("job_id") or msg.get_header(CMIHeader.HEADER_JOB_ID))
        who = site_part(msg.origin or "")
        if who != SERVER_CLIENT:
            verdict = self.sessions.check(msg.headers)
            if verdict is not None:
                return P.error_reply(verdict.code, verdict.reason)
        if msg.origin != f"{who}.{job_id}":
            return P.error_reply(CellReturnCode.AUTHENTICATION_ERROR,
                                 f"{msg.origin} is not a job cell of job {job_id}")
        status = RunStatus(doc.get("status", S.FINISHED_EXECUTION_EXCEPTION))
        if doc.get("error"):
            await self._record_error(job_id, who, str(doc["error"]))
        if status == S.RUNNING:  # an error report (e.g. a training script's) that ends nothing
            return P.ok_reply()
        if who == SERVER_CLIENT and status == S.FINISHED_COMPLETED:
            await self._io(self.store.save_results, job_id, _results_zip(doc.get("results")))
        reason = "workflow completed" if status == S.FINISHED_COMPLETED else \
            f"{who}: {doc.get('error') or status}"
        self._spawn(self.finish, job_id, status, reason)
        return P.ok_reply()

    def _progress(self, msg: Message) -> None:
        """Keep the latest progress a server job cell sent (fire-and-forget, read by ``get``)."""
        try:
            doc = P.loads(msg, "job progress")
        except JobError:
            return
        job_id = str(doc.get("job_id"))
        if msg.origin == f"{SERVER_CLIENT}.{job_id}" and job_id in self.active:
            self.progress.pop(job_id, None)
            self.progress[job_id] = doc
            while len(self.progress) > 256:  # keep the latest jobs' progress only
                del self.progress[next(iter(self.progress))]

    async def _exited(self, msg: Message) -> Message:
        doc = P.loads(msg, "job exit")
        site = site_part(msg.origin or "")
        verdict = self.sessions.check(msg.headers)
        if verdict is not None:
            return P.error_reply(verdict.code, verdict.reason)
        job_id, code = str(doc.get("job_id")), doc.get("returncode")
        if code != 0 and not doc.get("aborted"):
            self._spawn(self._process_died, job_id, site, code)
        return P.ok_reply()

    async def _process_died(self, job_id: str, who: str, code: Any) -> None:
        job = self.active.get(job_id)
        if job is None or job.ending:
            return
        error = f"{who}: job process exited with status {code}"
        await self._record_error(job_id, who, error)
        await self.finish(job_id, S.FINISHED_ABNORMAL, error)

    def _spawn(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` in the runner's nursery; an error it raises is logged, and never
        takes the job runtime (every other job) down with it."""
        assert self._nursery is not None
        spawn_guarded(self._nursery, log, fn, *args)

    # --- scheduling -----------------------------------------------------------------
    async def _schedule_loop(self) -> None:
        while True:
            await self.schedule_once()
            with trio.move_on_after(self.poll_interval):
                await self._wake.wait()
            self._wake = trio.Event()

    async def schedule_once(self) -> None:
        """One scheduling pass: start what can start, end what can never be scheduled."""
        waiting = [j for j in await self._read(self.store.list_jobs, {S.SUBMITTED, S.APPROVED})
                   if j.job_id not in self.active]
        if not waiting:
            return
        running = await self._read(_get_jobs, self.store, list(self.active))
        decisions = pick_jobs(waiting, self.connected_sites(), self.resources, running,
                              time.time(), self.refused)
        for d in decisions:
            if d.action is Action.CAN_NOT_SCHEDULE:
                await self._io(self.store.set_status, d.job_id, S.FINISHED_CANT_SCHEDULE,
                               d.reason)
            else:
                self.active[d.job_id] = _Active(d.job_id, list(d.sites))
                self._spawn(self._start_job, d.job_id, d.reservations)

    async def _start_job(self, job_id: str, reservations: dict[str, Any]) -> None:
        state = self.active[job_id]
        with trio.CancelScope() as scope:
            state.scope = scope
            try:
                await self._dispatch(state, reservations)
            except (CellnetError, OSError, trio.TooSlowError) as exc:
                log.warning("job %s failed to start: %s", job_id, exc)
                await self._record_error(job_id, SERVER_CLIENT, f"failed to start: {exc}")
                status = S.FAILED_TO_RUN
                meta = await self._read(self.store.get_meta, job_id)
                if RunStatus(meta[JobMetaKey.STATUS]) == S.RUNNING:
                    status = S.FINISHED_ABNORMAL
                await self.finish(job_id, status, f"failed to start: {exc}")
            finally:
                state.scope = None

    async def _dispatch(self, state: _Active, reservations: dict[str, Any]) -> None:
        job_id, cell = state.job_id, self.node.cell
        replies = {s: await cell.send_request(
            s, P.RUNTIME_CHANNEL, P.RuntimeTopic.CHECK_RESOURCES,
            self._server_msg({"job_id": job_id, "resources": reservations.get(s, {})}))
            for s in state.sites}
        # a site that said no is remembered until it logs in again; one that could not
        # answer (link down, session not settled yet) is simply asked again next pass
        refused = [s for s, r in replies.items()
                   if r.return_code == "ok" and not P.loads(r, "check")["ok"]]
        failed = [s for s, r in replies.items() if r.return_code != "ok"]
        if refused or failed:
            for s in failed:
                log.info("job %s: %s could not check resources (%s: %s); will retry",
                         job_id, s, replies[s].return_code, replies[s].error)
            self.refused.setdefault(job_id, set()).update(refused)
            for s in state.sites:
                await cell.send_request(s, P.RUNTIME_CHANNEL, P.RuntimeTopic.CANCEL_RESOURCES,
                                        self._server_msg({"job_id": job_id}))
            del self.active[job_id]
            if refused:
                self.wake()
            return
        job = await self._read(self.store.get_job, job_id)
        await self._io(self.store.record_schedule, job_id, state.sites)
        await self._io(self.store.set_status, job_id, S.DISPATCHED,
                       f"deploying to {', '.join(state.sites)}")
        server_app = job.app_for_site(SERVER_CLIENT)
        if server_app is None:
            raise JobError("the job deploys no app to the server (no workflow to run)")
        apps = _Apps(job)
        with trio.fail_after(self.start_timeout):
            try:
                async with trio.open_nursery() as nursery:
                    for site in state.sites:
                        nursery.start_soon(self._deploy_to, job, site, apps)
            except BaseExceptionGroup as group:  # a site's deploy failed: one JobError
                failed, other = group.split((CellnetError, OSError))
                if failed is None or other is not None:
                    raise
                raise JobError("; ".join(str(e) for e in _leaves(failed))) from None
        await self._io(self.store.record_deploy, job_id, [f"{s}: OK" for s in state.sites])
        app, _ = await apps.get(server_app)
        app_dir = await trio.to_thread.run_sync(self._unpack, job.job_id, app)
        config = {"job_id": job_id, "role": "server", "app_dir": str(app_dir),
                  "session": self.sessions.server_session().to_dict(),
                  "tokens": self.sessions.checker(state.sites).tokens, "clients": state.sites}
        path = self.root / job_id / "job_config.json"
        await trio.to_thread.run_sync(path.write_text, json.dumps(config))
        argv = [sys.executable, "-m", "cellnet.fl.runtime.job_cell", str(path)]
        state.child = await self.node.start_child(job_id, argv, timeout=self.start_timeout)
        await self._io(self.store.set_status, job_id, S.RUNNING, "job cells started")
        self._spawn(self._watch_server_cell, state)

    async def _deploy_to(self, job: Any, site: str, apps: _Apps) -> None:
        app, sha256 = await apps.get(job.app_for_site(site))
        doc = {"job_id": job.job_id, "app": app, "sha256": sha256,
               "clients": self.active[job.job_id].sites}
        reply = await self.node.cell.send_request(
            site, P.RUNTIME_CHANNEL, P.RuntimeTopic.DEPLOY, self._server_msg(doc, job.job_id),
            self.start_timeout)
        if reply.return_code != "ok":
            raise JobError(f"deploy to {site} failed: {reply.return_code}: {reply.error}")

    def _unpack(self, job_id: str, app: bytes) -> Path:
        """Extract the server's app zip ``app`` into ``<root>/<job_id>/app`` (runs in a thread)."""
        job_dir = self.root / job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        dest = job_dir / "app"
        if dest.exists():
            shutil.rmtree(dest)
        return unzip_job(app, dest)

    async def _watch_server_cell(self, state: _Active) -> None:
        assert state.child is not None
        code = await state.child.process.wait()
        await trio.sleep(0.2)  # a report sent just before exiting is handled first
        if code != 0:
            await self._process_died(state.job_id, SERVER_CLIENT, code)
        elif not state.ending:
            self._spawn(self.finish, state.job_id, S.FINISHED_ABNORMAL,
                        "server job process ended without a report")

    # --- ending ---------------------------------------------------------------------
    async def finish(self, job_id: str, status: RunStatus, reason: str) -> None:
        """End an active job with ``status`` and stop all its processes everywhere."""
        state = self.active.get(job_id)
        if state is None:
            return
        if state.ending:
            await state.done.wait()
            return
        state.ending = True
        if state.scope is not None:
            state.scope.cancel()
        with trio.CancelScope(shield=True):
            await self._io(_end_status, self.store, job_id, status, reason)
        with trio.CancelScope(shield=True), trio.move_on_after(self.abort_timeout):
            msg = self._server_msg({"job_id": job_id}, job_id)
            await self.node.cell.broadcast_request(state.sites, P.RUNTIME_CHANNEL,
                                                   P.RuntimeTopic.ABORT_JOB, msg,
                                                   self.abort_timeout)
            child = state.child or self.node.children.get(f"{SERVER_CLIENT}.{job_id}")
            if child is not None and child.returncode is None:
                child.process.terminate()
                with trio.move_on_after(3):
                    await child.process.wait()
                if child.returncode is None:
                    child.process.kill()
        self.active.pop(job_id, None)
        state.done.set()
        self.wake()


class _Apps:
    """A job's app zips with their SHA-256, each built once in a worker thread for all the
    sites it deploys to (a failure is not kept: every site asking for that app gets it)."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self._built: dict[Any, tuple[bytes, str]] = {}
        self._lock = trio.Lock()

    async def get(self, app_name: Any) -> tuple[bytes, str]:
        async with self._lock:
            if app_name not in self._built:
                self._built[app_name] = await trio.to_thread.run_sync(self._build, app_name)
            return self._built[app_name]

    def _build(self, app_name: Any) -> tuple[bytes, str]:
        app = self.job.get_application(app_name)
        return app, hashlib.sha256(app).hexdigest()


def _get_jobs(store: JobStore, job_ids: list[str]) -> list[Any]:
    return [store.get_job(j) for j in job_ids]


def _end_status(store: JobStore, job_id: str, status: RunStatus, reason: str) -> None:
    """Record a job's end (read, decide and write in one store step)."""
    current = RunStatus(store.get_meta(job_id)[JobMetaKey.STATUS])
    if status not in LEGAL_TRANSITIONS[current] and S.RUNNING in LEGAL_TRANSITIONS[current] \
            and status in LEGAL_TRANSITIONS[S.RUNNING]:
        store.set_status(job_id, S.RUNNING, "job cells started")
        current = S.RUNNING
    if status in LEGAL_TRANSITIONS[current]:
        store.set_status(job_id, status, reason)
    elif current in (S.SUBMITTED, S.APPROVED) and status != S.FINISHED_ABORTED:
        store.set_status(job_id, S.FINISHED_ABNORMAL, reason)


def peer_identity(cell: Any, fqcn: str) -> Identity | None:
    """The identity the certificate of ``cell``'s direct TLS link to ``fqcn`` proves (or None)."""
    link = cell.get_link(fqcn) if fqcn else None
    ssl_object = getattr(getattr(link, "stream", None), "ssl_object", None)
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return identity_from_cert(der) if der else None


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions inside ``group`` and its nested groups, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _results_zip(results: Any) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("results.json", json.dumps(results, default=str))
    return buf.getvalue()
