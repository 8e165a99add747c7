"""Persistent job store on the server's workspace: meta, content, results, submit records.

Theory of operation
-------------------
Layout under ``<workspace>/``::

    jobs/<job_id>/meta.json      the job's meta (JobMetaKey fields + status history)
    jobs/<job_id>/data.zip       the job folder, canonical deterministic zip
    jobs/<job_id>/results.zip    the job's results, once saved
    submits/<sha256(token)>.json submit records (SubmitRecordKey fields)

Every file is written with :mod:`cellnet.fl._atomic` (temp + fsync + replace +
dir fsync), so a crash leaves each file either old or new. Multi-file steps are
ordered so that one file is the commit point:

* **submit**: record ``CREATING`` -> ``data.zip`` -> ``meta.json`` (commit) ->
  record ``CREATED``. :meth:`JobStore.recover` completes a ``CREATING`` record
  whose meta exists and rolls back one whose meta does not.
* **delete**: rename ``jobs/<id>`` to ``jobs/.deleting-<id>`` (commit) -> mark
  the record ``JOB_DELETED`` -> remove the folder; recovery finishes both.

A submit with a token is idempotent: the same token with the same content (by
the SHA-256 of its canonical zip) returns the same job id; the same token with
other content raises :class:`SubmitConflictError`. Status changes follow
:data:`LEGAL_TRANSITIONS` and are appended, with time and reason, to the meta's
``status_history``. The store assumes one owning process (the server).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cellnet.defs import JobMetaKey, RunStatus, SubmitRecordKey, SubmitRecordState
from cellnet.errors import IllegalTransitionError, JobError, JobNotFoundError, SubmitConflictError
from cellnet.fl import _atomic
from cellnet.fl._zipio import DEFAULT_LIMITS, Limits
from cellnet.fl.job_def import Job
from cellnet.fl.job_folder import load_job_archive

STATUS_HISTORY = "status_history"
STATUS_REASON = "status_reason"
#: Meta key of the errors recorded for ``show_errors`` (a list of {site, error, time}).
ERRORS = "errors"
SUBMIT_TOKEN = "submit_token"
CONTENT_HASH = "job_content_hash"
SCHEMA_VERSION = 1

_F = RunStatus
#: The final statuses of a job (every ``FINISHED:*`` one).
FINISHED_STATUSES = frozenset(s for s in RunStatus if s.value.startswith("FINISHED:"))
_CANCEL = {_F.FINISHED_CANT_SCHEDULE, _F.FINISHED_ABORTED, _F.ABANDONED}
_ENDED = {_F.FINISHED_ABORTED, _F.FINISHED_ABNORMAL, _F.FINISHED_EXECUTION_EXCEPTION}
LEGAL_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    _F.SUBMITTED: frozenset({_F.APPROVED, _F.DISPATCHED, _F.RUNNING, *_CANCEL}),
    _F.APPROVED: frozenset({_F.DISPATCHED, _F.RUNNING, *_CANCEL}),
    _F.DISPATCHED: frozenset({_F.RUNNING, _F.FAILED_TO_RUN, *_ENDED}),
    _F.RUNNING: frozenset({_F.FINISHED_COMPLETED, *_ENDED}),
    **{s: frozenset() for s in FINISHED_STATUSES},
}

# Meta keys only the store sets; a submitted meta.json cannot preset them.
_SYSTEM_KEYS = frozenset(
    str(k)
    for k in (
        JobMetaKey.JOB_ID, JobMetaKey.STATUS, JobMetaKey.SUBMIT_TIME,
        JobMetaKey.SUBMIT_TIME_ISO, JobMetaKey.SUBMITTER_NAME, JobMetaKey.SUBMITTER_ORG,
        JobMetaKey.SUBMITTER_ROLE, JobMetaKey.SCHEDULE_COUNT, JobMetaKey.SCHEDULE_HISTORY,
        JobMetaKey.LAST_SCHEDULE_TIME, JobMetaKey.START_TIME, JobMetaKey.DURATION,
        JobMetaKey.CLONED_FROM, JobMetaKey.RESULT_LOCATION, JobMetaKey.CONTENT_LOCATION,
        JobMetaKey.JOB_CLIENTS, JobMetaKey.JOB_DEPLOY_DETAIL, JobMetaKey.APPROVALS,
        JobMetaKey.JOB_FOLDER_NAME, STATUS_HISTORY, STATUS_REASON, ERRORS, SUBMIT_TOKEN,
        CONTENT_HASH,
    )
)  # fmt: skip
_JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_META, _DATA, _RESULTS = "meta.json", "data.zip", "results.zip"
_DELETING = ".deleting-"


def check_transition(old: RunStatus, new: RunStatus) -> None:
    """Raise :class:`IllegalTransitionError` unless ``old -> new`` is in the table."""
    if new not in LEGAL_TRANSITIONS[old]:
        raise IllegalTransitionError(f"job status cannot change from {old} to {new}")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


@dataclass(frozen=True)
class SubmitResult:
    """What a submit did: the job id, whether it was new, and validation warnings."""

    job_id: str
    created: bool
    warnings: tuple[str, ...] = ()


@dataclass
class RecoveryReport:
    """What :meth:`JobStore.recover` changed."""

    abnormal: list[str] = field(default_factory=list)
    completed_submits: list[str] = field(default_factory=list)
    rolled_back_submits: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Submitter:
    """Who submits a job (taken from the admin's certificate by the caller)."""

    name: str = ""
    org: str = ""
    role: str = ""


class JobStore:
    """The job store of one server workspace (see the module docstring)."""

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        limits: Limits = DEFAULT_LIMITS,
    ):
        self.root = Path(workspace)
        self._jobs = self.root / "jobs"
        self._submits = self.root / "submits"
        self._clock = clock
        self._limits = limits
        self._jobs.mkdir(parents=True, exist_ok=True)
        self._submits.mkdir(parents=True, exist_ok=True)
        self._leftovers = [str(p) for p in _atomic.clean_temp_files(self.root)]

    # --- paths and raw records -------------------------------------------------------

    def _job_dir(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not _JOB_ID_RE.fullmatch(job_id):
            raise JobNotFoundError(f"{job_id!r} is not a valid job id")
        return self._jobs / job_id

    def _record_path(self, token: str) -> Path:
        return self._submits / (hashlib.sha256(token.encode("utf-8")).hexdigest() + ".json")

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise JobError(f"{path}: store file is corrupt: {exc}") from exc

    def get_meta(self, job_id: str) -> dict[str, Any]:
        """The job's meta record (a fresh dict)."""
        meta = self._read_json(self._job_dir(job_id) / _META)
        if meta is None:
            raise JobNotFoundError(f"no job {job_id!r} in the job store")
        return meta

    def _put_meta(self, meta: dict[str, Any]) -> None:
        _atomic.write_json(self._job_dir(meta[JobMetaKey.JOB_ID]) / _META, meta)

    # --- submit / clone --------------------------------------------------------------

    def submit(
        self,
        content: bytes,
        *,
        submit_token: str | None = None,
        submitter: Submitter = Submitter(),
        sites: Collection[str] | None = None,
        job_folder_name: str = "",
    ) -> SubmitResult:
        """Validate a job archive and store it as a SUBMITTED job (idempotent per token)."""
        spec, canonical = load_job_archive(content, sites, job_folder_name, self._limits)
        digest = hashlib.sha256(canonical).hexdigest()
        record: dict[str, Any] | None = None
        if submit_token is not None:
            if not isinstance(submit_token, str) or not submit_token:
                raise JobError("submit token must be a non-empty string")
            record = self._read_json(self._record_path(submit_token))
        if record is not None:
            return self._resubmit(record, digest, canonical, spec.meta, spec.warnings)
        job_id = str(uuid.uuid4())
        now = self._clock()
        if submit_token is not None:
            record = {
                SubmitRecordKey.SUBMIT_TOKEN: submit_token,
                SubmitRecordKey.JOB_ID: job_id,
                SubmitRecordKey.JOB_CONTENT_HASH: digest,
                SubmitRecordKey.STATE: SubmitRecordState.CREATING,
                SubmitRecordKey.JOB_NAME: spec.name,
                SubmitRecordKey.JOB_FOLDER_NAME: job_folder_name,
                SubmitRecordKey.SUBMITTER_NAME: submitter.name,
                SubmitRecordKey.SUBMITTER_ORG: submitter.org,
                SubmitRecordKey.SUBMITTER_ROLE: submitter.role,
                SubmitRecordKey.SUBMIT_TIME: now,
                SubmitRecordKey.SCHEMA_VERSION: SCHEMA_VERSION,
            }
            _atomic.write_json(self._record_path(submit_token), record)
        meta = self._new_meta(job_id, spec.meta, submitter, now, job_folder_name)
        meta[SUBMIT_TOKEN], meta[CONTENT_HASH] = submit_token, digest
        self._create(meta, canonical, record)
        return SubmitResult(job_id, True, spec.warnings)

    def _resubmit(
        self,
        record: dict[str, Any],
        digest: str,
        canonical: bytes,
        user_meta: dict[str, Any],
        warnings: tuple[str, ...],
    ) -> SubmitResult:
        job_id = record[SubmitRecordKey.JOB_ID]
        token = record[SubmitRecordKey.SUBMIT_TOKEN]
        if record[SubmitRecordKey.JOB_CONTENT_HASH] != digest:
            raise SubmitConflictError(
                f"submit token {token!r} was already used for job {job_id!r} with different content"
            )
        state = record[SubmitRecordKey.STATE]
        if state == SubmitRecordState.JOB_DELETED:
            raise SubmitConflictError(
                f"submit token {token!r} created job {job_id!r}, which has been deleted"
            )
        if state == SubmitRecordState.CREATING:  # an earlier attempt stopped half-way
            if self._read_json(self._job_dir(job_id) / _META) is None:
                submitter = Submitter(
                    record[SubmitRecordKey.SUBMITTER_NAME],
                    record[SubmitRecordKey.SUBMITTER_ORG],
                    record[SubmitRecordKey.SUBMITTER_ROLE],
                )
                meta = self._new_meta(
                    job_id, user_meta, submitter, record[SubmitRecordKey.SUBMIT_TIME],
                    record[SubmitRecordKey.JOB_FOLDER_NAME],
                )  # fmt: skip
                meta[SUBMIT_TOKEN], meta[CONTENT_HASH] = token, digest
                self._create(meta, canonical, record)
                return SubmitResult(job_id, True, warnings)
            self._set_record_state(record, SubmitRecordState.CREATED)
        return SubmitResult(job_id, False, warnings)

    def _new_meta(
        self,
        job_id: str,
        user_meta: Mapping[str, Any],
        submitter: Submitter,
        now: float,
        folder_name: str,
    ) -> dict[str, Any]:
        meta = {k: v for k, v in user_meta.items() if k not in _SYSTEM_KEYS}
        meta.update(
            {
                JobMetaKey.JOB_ID: job_id,
                JobMetaKey.SUBMIT_TIME: now,
                JobMetaKey.SUBMIT_TIME_ISO: _iso(now),
                JobMetaKey.SUBMITTER_NAME: submitter.name,
                JobMetaKey.SUBMITTER_ORG: submitter.org,
                JobMetaKey.SUBMITTER_ROLE: submitter.role,
                JobMetaKey.STATUS: RunStatus.SUBMITTED,
                JobMetaKey.SCHEDULE_COUNT: 0,
                JobMetaKey.SCHEDULE_HISTORY: [],
                JobMetaKey.JOB_FOLDER_NAME: folder_name or user_meta.get(JobMetaKey.JOB_NAME),
                JobMetaKey.CONTENT_LOCATION: f"jobs/{job_id}/{_DATA}",
                STATUS_HISTORY: [_history_entry(RunStatus.SUBMITTED, now, "submitted")],
            }
        )
        return {str(k): v for k, v in meta.items()}

    def _create(self, meta: dict[str, Any], canonical: bytes, record: dict | None) -> None:
        job_dir = self._job_dir(meta[JobMetaKey.JOB_ID])
        job_dir.mkdir(exist_ok=True)
        _atomic.fsync_dir(self._jobs)
        _atomic.write_bytes(job_dir / _DATA, canonical)
        self._put_meta(meta)  # the commit point
        if record is not None:
            self._set_record_state(record, SubmitRecordState.CREATED)

    def _set_record_state(self, record: dict[str, Any], state: SubmitRecordState, **extra) -> None:
        record = {**record, SubmitRecordKey.STATE: state, **extra}
        _atomic.write_json(self._record_path(record[SubmitRecordKey.SUBMIT_TOKEN]), record)

    def clone(self, job_id: str, submitter: Submitter = Submitter()) -> str:
        """A new SUBMITTED job with the same content; its meta says ``cloned_from``."""
        src = self.get_meta(job_id)
        content = self.get_content(job_id)
        new_id = str(uuid.uuid4())
        now = self._clock()
        meta = self._new_meta(new_id, src, submitter, now, src.get(JobMetaKey.JOB_FOLDER_NAME))
        meta[JobMetaKey.CLONED_FROM] = job_id
        meta[CONTENT_HASH] = src.get(CONTENT_HASH)
        self._create(meta, content, None)
        return new_id

    # --- reading ---------------------------------------------------------------------

    def get_content(self, job_id: str) -> bytes:
        """The job folder as the canonical zip stored at submit."""
        self.get_meta(job_id)
        return (self._job_dir(job_id) / _DATA).read_bytes()

    def get_job(self, job_id: str) -> Job:
        """The job as a :class:`Job` whose apps load lazily from the store."""
        return Job.from_meta(self.get_meta(job_id), lambda: self.get_content(job_id))

    def list_jobs(self, statuses: Collection[RunStatus] | None = None) -> list[Job]:
        """All jobs (or those in ``statuses``), oldest submit first."""
        jobs = []
        for d in self._jobs.iterdir():
            if d.name.startswith(".") or not (d / _META).exists():
                continue
            job = self.get_job(d.name)
            if statuses is None or job.status in statuses:
                jobs.append(job)
        return sorted(jobs, key=lambda j: (j.submit_time, j.job_id))

    def get_results(self, job_id: str) -> bytes | None:
        """The saved results, or None if none were saved."""
        self.get_meta(job_id)
        try:
            return (self._job_dir(job_id) / _RESULTS).read_bytes()
        except FileNotFoundError:
            return None

    # --- updates ---------------------------------------------------------------------

    def set_status(self, job_id: str, status: RunStatus, reason: str = "") -> dict[str, Any]:
        """Move a job to ``status`` if the lifecycle allows it; records time and reason."""
        status = RunStatus(status)
        meta = self.get_meta(job_id)
        old = RunStatus(meta[JobMetaKey.STATUS])
        check_transition(old, status)
        now = self._clock()
        meta[JobMetaKey.STATUS] = status
        meta[STATUS_REASON] = reason
        meta[STATUS_HISTORY].append(_history_entry(status, now, reason))
        if status == RunStatus.RUNNING:
            meta[JobMetaKey.START_TIME] = now
        if status in FINISHED_STATUSES and meta.get(JobMetaKey.START_TIME) is not None:
            meta[JobMetaKey.DURATION] = now - meta[JobMetaKey.START_TIME]
        self._put_meta(meta)
        return meta

    def record_error(self, job_id: str, site: str, error: str) -> dict[str, Any]:
        """Append an error (who, text, time) to the job's meta for ``show_errors``; durable."""
        meta = self.get_meta(job_id)
        now = self._clock()
        meta.setdefault(ERRORS, []).append({"site": site, "error": error, "time": now,
                                            "time_iso": _iso(now)})
        self._put_meta(meta)
        return meta

    def get_errors(self, job_id: str) -> list[dict[str, Any]]:
        """The errors recorded for a job, oldest first."""
        return list(self.get_meta(job_id).get(ERRORS, []))

    def record_schedule(self, job_id: str, sites: Collection[str] = ()) -> dict[str, Any]:
        """Count a scheduling attempt (time and chosen sites) in the job's meta."""
        meta = self.get_meta(job_id)
        now = self._clock()
        meta[JobMetaKey.SCHEDULE_COUNT] = meta.get(JobMetaKey.SCHEDULE_COUNT, 0) + 1
        meta[JobMetaKey.LAST_SCHEDULE_TIME] = now
        meta[JobMetaKey.SCHEDULE_HISTORY].append({"time": _iso(now), "sites": sorted(sites)})
        if sites:
            meta[JobMetaKey.JOB_CLIENTS] = sorted(sites)
        self._put_meta(meta)
        return meta

    def record_deploy(self, job_id: str, detail: Collection[str]) -> dict[str, Any]:
        """Record where the job was deployed (``JOB_DEPLOY_DETAIL``: ``"<site>: <outcome>"``)."""
        meta = self.get_meta(job_id)
        meta[JobMetaKey.JOB_DEPLOY_DETAIL] = [str(d) for d in detail]
        self._put_meta(meta)
        return meta

    def save_results(self, job_id: str, data: bytes) -> None:
        """Store the job's results atomically and record their location."""
        meta = self.get_meta(job_id)
        _atomic.write_bytes(self._job_dir(job_id) / _RESULTS, bytes(data))
        meta[JobMetaKey.RESULT_LOCATION] = f"jobs/{job_id}/{_RESULTS}"
        self._put_meta(meta)

    def delete(self, job_id: str, deleted_by: str = "") -> None:
        """Remove a job that is not dispatched or running; its submit token stays spent."""
        meta = self.get_meta(job_id)
        if meta[JobMetaKey.STATUS] in (RunStatus.DISPATCHED, RunStatus.RUNNING):
            raise JobError(f"job {job_id!r} is {meta[JobMetaKey.STATUS]}; abort it first")
        gone = self._jobs / f"{_DELETING}{job_id}"
        os.replace(self._job_dir(job_id), gone)
        _atomic.fsync_dir(self._jobs)
        token = meta.get(SUBMIT_TOKEN)
        record = self._read_json(self._record_path(token)) if token else None
        if record is not None:
            extra = {
                SubmitRecordKey.DELETED_BY: deleted_by,
                SubmitRecordKey.DELETED_TIME: now_iso(self._clock),
            }
            self._set_record_state(record, SubmitRecordState.JOB_DELETED, **extra)
        shutil.rmtree(gone)

    # --- restart ---------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Bring the store to a consistent state after a restart (see the module doc)."""
        report = RecoveryReport(removed=list(self._leftovers))
        self._leftovers = []
        for d in self._jobs.iterdir():
            if d.name.startswith(_DELETING):
                shutil.rmtree(d)
                report.removed.append(str(d))
        for path in sorted(self._submits.glob("*.json")):
            record = self._read_json(path)
            if record is None:
                continue
            job_id, state = record[SubmitRecordKey.JOB_ID], record[SubmitRecordKey.STATE]
            has_meta = (self._job_dir(job_id) / _META).exists()
            if state == SubmitRecordState.CREATING and has_meta:
                self._set_record_state(record, SubmitRecordState.CREATED)
                report.completed_submits.append(job_id)
            elif state == SubmitRecordState.CREATING:
                shutil.rmtree(self._job_dir(job_id), ignore_errors=True)
                path.unlink()
                report.rolled_back_submits.append(job_id)
            elif state == SubmitRecordState.CREATED and not has_meta:
                self._set_record_state(
                    record, SubmitRecordState.JOB_DELETED,
                    **{SubmitRecordKey.DELETED_BY: "recovery",
                       SubmitRecordKey.DELETED_TIME: now_iso(self._clock)},
                )  # fmt: skip
        for d in self._jobs.iterdir():
            if d.is_dir() and not (d / _META).exists():
                shutil.rmtree(d)
                report.removed.append(str(d))
        for job in self.list_jobs({RunStatus.RUNNING, RunStatus.DISPATCHED}):
            was = job.status
            self.set_status(
                job.job_id,
                RunStatus.FINISHED_ABNORMAL,
                f"server restarted while the job was {was}",
            )
            report.abnormal.append(job.job_id)
        return report


def now_iso(clock: Callable[[], float]) -> str:
    """The clock's current time as an ISO 8601 UTC string."""
    return _iso(clock())


def _history_entry(status: RunStatus, t: float, reason: str) -> dict[str, Any]:
    return {"status": str(status), "time": t, "time_iso": _iso(t), "reason": reason}
