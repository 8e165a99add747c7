"""Federated runtime: jobs (folders, definition, store, scheduler), DXO, filters, aggregators."""

from cellnet.fl.aggregators import (
    Aggregator,
    CoordinateMedian,
    InTimeFedAvg,
    TrimmedMean,
    make_aggregator,
)
from cellnet.fl.dxo import DXO, DataKind, DXOPayload
from cellnet.fl.filters import (
    Dequantize,
    ExcludeVars,
    Filter,
    FilterChain,
    GaussianPrivacy,
    Quantize,
    make_filter,
    register_filter,
)
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
    "DXO",
    "LEGAL_TRANSITIONS",
    "Action",
    "Aggregator",
    "CoordinateMedian",
    "DXOPayload",
    "DataKind",
    "Decision",
    "Dequantize",
    "ExcludeVars",
    "Filter",
    "FilterChain",
    "GaussianPrivacy",
    "InTimeFedAvg",
    "Job",
    "JobSpec",
    "JobStore",
    "Limits",
    "Quantize",
    "RecoveryReport",
    "SubmitResult",
    "Submitter",
    "TrimmedMean",
    "check_transition",
    "load_job_archive",
    "load_job_folder",
    "make_aggregator",
    "make_filter",
    "pick_jobs",
    "register_filter",
    "unzip_job",
    "zip_job_folder",
]
