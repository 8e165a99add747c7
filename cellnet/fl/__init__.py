"""Federated runtime: job folders, the Job definition, the persistent job store, the scheduler."""

from cellnet.fl.job_def import DEFAULT_SCHEDULE_TIMEOUT, Job
from cellnet.fl.job_folder import (
    ALL_SITES,
    JobSpec,
    Limits,
    load_job_archive,
    load_job_folder,
    unzip_job,
    zip_job_folder,
)
from cellnet.fl.job_store import (
    LEGAL_TRANSITIONS,
    JobStore,
    RecoveryReport,
    SubmitResult,
    Submitter,
    check_transition,
)
from cellnet.fl.scheduler import Action, Decision, pick_jobs

__all__ = [
    "ALL_SITES",
    "DEFAULT_SCHEDULE_TIMEOUT",
    "LEGAL_TRANSITIONS",
    "Action",
    "Decision",
    "Job",
    "JobSpec",
    "JobStore",
    "Limits",
    "RecoveryReport",
    "SubmitResult",
    "Submitter",
    "check_transition",
    "load_job_archive",
    "load_job_folder",
    "pick_jobs",
    "unzip_job",
    "zip_job_folder",
]
