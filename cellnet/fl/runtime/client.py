"""JobClient: submit, list, get and abort jobs, and show their errors, from any cell."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import trio

from cellnet.defs import JobMetaKey, RunStatus
from cellnet.errors import JobError, JobNotFoundError, JobValidationError, SubmitConflictError
from cellnet.fl.job_folder import zip_job_folder
from cellnet.fl.runtime import _proto as P
from cellnet.fl.runtime.session import SERVER_CLIENT
from cellnet.message import Message

__all__ = ["JobClient"]

_KINDS = {c.__name__: c for c in (JobValidationError, JobNotFoundError, SubmitConflictError)}


class JobClient:
    """Talks to the server's job channel from ``cell`` (an admin-like cell)."""

    def __init__(self, cell: Any, server: str = SERVER_CLIENT, timeout: float = 30.0) -> None:
        self.cell, self.server, self.timeout = cell, server, timeout

    async def _call(self, topic: str, doc: dict[str, Any]) -> dict[str, Any]:
        reply = await self.cell.send_request(self.server, P.JOB_CHANNEL, topic,
                                             Message({}, P.dumps(doc)), self.timeout)
        if reply.return_code == "ok":
            return P.loads(reply, topic)
        info: dict[str, Any] = {}
        if reply.payload is not None:
            try:
                info = P.loads(reply, topic)
            except JobError:
                info = {}
        cls = _KINDS.get(str(info.get("kind")), JobError)
        if cls is JobValidationError:
            problems = info.get("problems")
            what = f"{topic} refused" if problems else f"{topic} refused: {reply.error}"
            raise JobValidationError(what, problems)
        raise cls(f"{topic} refused ({reply.return_code}): {reply.error}")

    async def submit(self, job: str | os.PathLike[str] | bytes,
                     submit_token: str | None = None) -> dict[str, Any]:
        """Submit a job folder (path) or job zip; ``{job_id, created, warnings}``."""
        if isinstance(job, bytes):
            content, name = job, ""
        else:
            content, name = zip_job_folder(job), Path(job).name
        return await self._call(P.JobTopic.SUBMIT, {"content": content, "folder_name": name,
                                                    "submit_token": submit_token})

    async def list_jobs(self) -> list[dict[str, Any]]:
        return (await self._call(P.JobTopic.LIST, {}))["jobs"]

    async def get_meta(self, job_id: str) -> dict[str, Any]:
        return (await self._call(P.JobTopic.GET, {"job_id": job_id, "results": False}))["meta"]

    async def get_results(self, job_id: str) -> Any:
        """The workflow's results (decoded JSON), or None before there are any."""
        raw = (await self._call(P.JobTopic.GET, {"job_id": job_id}))["results"]
        if raw is None:
            return None
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            return json.loads(z.read("results.json"))

    async def get_progress(self, job_id: str) -> dict[str, Any] | None:
        """The latest progress its workflow reported (rounds, sites answered, metrics) or None."""
        doc = await self._call(P.JobTopic.GET, {"job_id": job_id, "results": False})
        return doc.get("progress")

    async def abort(self, job_id: str) -> str:
        return (await self._call(P.JobTopic.ABORT, {"job_id": job_id}))["status"]

    async def show_errors(self, job_id: str) -> list[dict[str, Any]]:
        return (await self._call(P.JobTopic.ERRORS, {"job_id": job_id}))["errors"]

    async def wait_for_status(self, job_id: str, statuses: Collection[RunStatus | str],
                              timeout: float = 30.0, poll: float = 0.1) -> dict[str, Any]:
        """Poll until the job's status is one of ``statuses``; its meta (TooSlowError if not)."""
        wanted = {str(s) for s in statuses}
        with trio.fail_after(timeout):
            while True:
                meta = await self.get_meta(job_id)
                if str(meta[JobMetaKey.STATUS]) in wanted:
                    return meta
                await trio.sleep(poll)
