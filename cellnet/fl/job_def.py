"""The reference ``Job``: a job's id, deployment, resources and persisted meta.

``Job(job_id, resource_spec, deploy_map, meta, min_sites=1, required_sites=None)``
keeps the reference signature. The job's content (the job folder as a zip) is
not held in memory: a ``content_loader`` callable supplies it when an app is
requested, so listing thousands of jobs stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from cellnet.defs import JobMetaKey, RunStatus
from cellnet.errors import JobError
from cellnet.fl._zipio import build_zip, read_entries, subtree
from cellnet.fl.job_folder import ALL_SITES, SCHEDULE_TIMEOUT, client_sites
from cellnet.fqcn import SERVER

DEFAULT_SCHEDULE_TIMEOUT = 3600.0


class Job:
    """One job as the runtime sees it (see the module docstring)."""

    def __init__(
        self,
        job_id: str,
        resource_spec: Mapping[str, Mapping[str, float]],
        deploy_map: Mapping[str, list[str]],
        meta: Mapping[str, Any],
        min_sites: int = 1,
        required_sites: list[str] | None = None,
        *,
        content_loader: Callable[[], bytes] | None = None,
    ):
        self.job_id = job_id
        self.resource_spec = {s: dict(r) for s, r in resource_spec.items()}
        self.deploy_map = {app: list(sites) for app, sites in deploy_map.items()}
        self.meta = dict(meta)
        self.min_sites = min_sites
        self.required_sites = list(required_sites or [])
        self._content_loader = content_loader

    @classmethod
    def from_meta(
        cls, meta: Mapping[str, Any], content_loader: Callable[[], bytes] | None = None
    ) -> Job:
        """Build a Job from a job store meta record."""
        return cls(
            job_id=meta[JobMetaKey.JOB_ID],
            resource_spec=meta.get(JobMetaKey.RESOURCE_SPEC) or {},
            deploy_map=meta.get(JobMetaKey.DEPLOY_MAP) or {},
            meta=meta,
            min_sites=meta.get(JobMetaKey.MIN_CLIENTS) or 1,
            required_sites=meta.get(JobMetaKey.MANDATORY_CLIENTS) or [],
            content_loader=content_loader,
        )

    def __repr__(self) -> str:
        return f"Job({self.job_id!r}, status={self.status!r})"

    @property
    def status(self) -> RunStatus | None:
        """The job's RunStatus from its meta, if recorded."""
        raw = self.meta.get(JobMetaKey.STATUS)
        return RunStatus(raw) if raw is not None else None

    @property
    def submit_time(self) -> float:
        """Submit time (seconds since the epoch); 0.0 if not recorded."""
        return float(self.meta.get(JobMetaKey.SUBMIT_TIME) or 0.0)

    @property
    def schedule_timeout(self) -> float:
        """Seconds after submit within which the job must be scheduled."""
        return float(self.meta.get(SCHEDULE_TIMEOUT) or DEFAULT_SCHEDULE_TIMEOUT)

    def get_deployment(self) -> dict[str, list[str]]:
        """The deploy map: app name -> the sites it is deployed to (a copy)."""
        return {app: list(sites) for app, sites in self.deploy_map.items()}

    def deploys_to_all(self) -> bool:
        """True when the deploy map uses ``@ALL``."""
        return any(ALL_SITES in sites for sites in self.deploy_map.values())

    def client_sites(self, all_sites: Collection[str] = ()) -> set[str]:
        """The client sites this job deploys to (``@ALL`` expands to ``all_sites``)."""
        return client_sites(self.deploy_map, all_sites)

    def needs_server(self) -> bool:
        """True when an app is deployed to the server (explicitly or via ``@ALL``)."""
        return any(SERVER in s or ALL_SITES in s for s in self.deploy_map.values())

    def app_for_site(self, site: str) -> str | None:
        """The app deployed to ``site`` (explicitly or through ``@ALL``), or None."""
        for app, sites in self.deploy_map.items():
            if site in sites:
                return app
        for app, sites in self.deploy_map.items():
            if ALL_SITES in sites:
                return app
        return None

    def get_application(self, app_name: str, fl_ctx: object = None) -> bytes:
        """The app folder ``app_name`` as a deterministic zip (entries relative to the app).

        ``fl_ctx`` is accepted for the reference signature; the content does not
        depend on it.
        """
        del fl_ctx
        if app_name not in self.deploy_map:
            raise JobError(f"job {self.job_id!r} has no app {app_name!r}")
        if self._content_loader is None:
            raise JobError(f"job {self.job_id!r} has no content attached")
        entries = subtree(read_entries(self._content_loader()), app_name)
        if not entries:
            raise JobError(f"job {self.job_id!r}: app folder {app_name!r} is empty or missing")
        return build_zip(entries)
