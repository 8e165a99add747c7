"""Helpers for the federated-runtime tests: build job folders and Jobs in a few lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cellnet.defs import JobMetaKey, RunStatus
from cellnet.fl import Job

SITES = ("site-1", "site-2", "site-3")


def default_meta(**overrides: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "hello",
        "deploy_map": {"srv": ["server"], "cli": ["site-1", "site-2"]},
        "resource_spec": {"site-1": {"num_gpus": 1}},
        "min_clients": 2,
    }
    meta.update(overrides)
    return meta


def make_job_folder(
    root: Path, meta: dict[str, Any] | None = None, apps: tuple[str, ...] = ("srv", "cli")
) -> Path:
    """A valid job folder at ``root`` (apps get a config JSON and custom code)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps(default_meta() if meta is None else meta))
    for app in apps:
        (root / app / "config").mkdir(parents=True)
        (root / app / "config" / "config_fed.json").write_text(json.dumps({"app": app}))
        (root / app / "custom").mkdir()
        (root / app / "custom" / "train.py").write_text(f"APP = {app!r}\n")
    return root


def job(
    job_id: str,
    deploy: list[str],
    *,
    spec: dict[str, dict[str, float]] | None = None,
    min_sites: int = 1,
    required: list[str] | None = None,
    submit_time: float = 0.0,
    timeout: float = 100.0,
    status: RunStatus = RunStatus.SUBMITTED,
    job_clients: list[str] | None = None,
) -> Job:
    """A Job as the scheduler sees it."""
    meta: dict[str, Any] = {
        JobMetaKey.JOB_ID: job_id,
        JobMetaKey.SUBMIT_TIME: submit_time,
        JobMetaKey.STATUS: status,
        "schedule_timeout": timeout,
    }
    if job_clients is not None:
        meta[JobMetaKey.JOB_CLIENTS] = job_clients
    return Job(job_id, spec or {}, {"app": deploy}, meta, min_sites, required)
