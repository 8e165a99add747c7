"""Scheduler core: a pure function deciding which SUBMITTED jobs start now, on which sites.

The server runtime calls :func:`pick_jobs` with what it knows (waiting jobs,
connected sites, the resources each site reported, the jobs already running,
the sites that refused a reservation for a job, and the time) and acts on the
returned decisions: ``START`` (reserve ``reservations`` and deploy to ``sites``)
or ``CAN_NOT_SCHEDULE`` (end the job as FINISHED:CAN_NOT_SCHEDULE with
``reason``). Jobs with no decision wait for the next call. No I/O, no clock.

Policy
------
* A job can start when every required site is *usable* and at least
  ``min_sites`` of its client sites are. A site is usable for a job when it is
  connected, has not refused this job, and its free resources (capacity minus
  what running jobs and jobs started earlier in this call reserved) cover the
  job's ``resource_spec`` for that site. A resource a site does not report has
  capacity 0. The job is started on all its usable sites. The server is always
  available (this runs on it).
* Jobs are considered in FIFO order of submit time (ties by job id); several
  may start in one call while resources last.
* **No starvation.** A job that waits only because resources are busy (it
  would fit on enough sites if running jobs released theirs) *holds* its
  resource needs on its sites for the rest of the call: a later, smaller job
  may only use what is left after the held amounts. So small jobs can fill
  gaps the waiting job does not need (backfill) but cannot keep overtaking it.
  A job that waits for a site to connect, or whose needs exceed a site's whole
  capacity, holds nothing, so it cannot block others indefinitely.
* A job still unable to start once ``now >= submit_time + schedule_timeout``
  gets ``CAN_NOT_SCHEDULE`` with a reason naming what was missing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cellnet.defs import JobMetaKey, RunStatus
from cellnet.fl.job_def import Job

Resources = Mapping[str, float]
_WAITING = (RunStatus.SUBMITTED, RunStatus.APPROVED, None)


class Action(StrEnum):
    """What the runtime should do with a job."""

    START = "start"
    CAN_NOT_SCHEDULE = "can_not_schedule"


@dataclass(frozen=True)
class Decision:
    """One scheduling decision for one job."""

    job_id: str
    action: Action
    sites: tuple[str, ...] = ()
    reservations: Mapping[str, Resources] = field(default_factory=dict)
    reason: str = ""

    @property
    def status(self) -> RunStatus | None:
        """The status the job ends in for this decision (None when it starts)."""
        return RunStatus.FINISHED_CANT_SCHEDULE if self.action is Action.CAN_NOT_SCHEDULE else None


@dataclass
class _Eval:
    usable: list[str]
    busy: list[str]  # connected, would fit in the full capacity, but not in what is free
    problems: dict[str, str]  # site -> why it cannot be used (not for busy sites)


def _shortfall(need: Resources, free: Resources, capacity: Resources) -> str | None:
    """Describe the first resource ``free`` cannot cover, or None if all fit."""
    for res, amount in sorted(need.items()):
        have = free.get(res, 0.0)
        if amount > have:
            return f"{res} needs {amount:g}, {have:g} free of {capacity.get(res, 0.0):g}"
    return None


def _evaluate(
    job: Job,
    connected: Collection[str],
    free: Mapping[str, dict[str, float]],
    capacity: Mapping[str, Resources],
    refused: Collection[str],
) -> _Eval:
    result = _Eval([], [], {})
    for site in sorted(job.client_sites(connected) | set(job.required_sites)):
        need = job.resource_spec.get(site, {})
        cap = capacity.get(site, {})
        if site not in connected:
            result.problems[site] = "not connected"
        elif site in refused:
            result.problems[site] = "refused the reservation"
        elif (why := _shortfall(need, cap, cap)) is not None:
            result.problems[site] = f"too small: {why}"
        elif (why := _shortfall(need, free.get(site, {}), cap)) is not None:
            result.busy.append(site)
            result.problems[site] = f"busy: {why}"
        else:
            result.usable.append(site)
    return result


def _reason(job: Job, ev: _Eval) -> str:
    parts = []
    missing = [s for s in job.required_sites if s not in ev.usable]
    if missing:
        listed = ", ".join(f"{s} ({ev.problems.get(s, 'not deployed')})" for s in missing)
        parts.append(f"required site(s) unavailable: {listed}")
    if len(ev.usable) < job.min_sites:
        parts.append(
            f"{len(ev.usable)} of the {job.min_sites} site(s) needed are available"
            + (f" ({', '.join(ev.usable)})" if ev.usable else "")
        )
    others = [f"{s}: {p}" for s, p in sorted(ev.problems.items()) if s not in missing]
    if others:
        parts.append("other sites: " + "; ".join(others))
    return "; ".join(parts)


def _take(free: dict[str, dict[str, float]], site: str, need: Resources) -> None:
    pool = free.setdefault(site, {})
    for res, amount in need.items():
        pool[res] = max(0.0, pool.get(res, 0.0) - amount)


def _running_sites(job: Job, connected: Collection[str]) -> Iterable[str]:
    sites = job.meta.get(JobMetaKey.JOB_CLIENTS)
    return sites if sites else job.client_sites(connected)


def pick_jobs(
    submitted_jobs: Iterable[Job],
    connected_sites: Collection[str],
    site_resources: Mapping[str, Resources],
    running_jobs: Iterable[Job],
    now: float,
    refused: Mapping[str, Collection[str]] | None = None,
) -> list[Decision]:
    """Decide which waiting jobs start now and which can no longer be scheduled."""
    connected = frozenset(connected_sites)
    refused = refused or {}
    capacity = {s: dict(r) for s, r in site_resources.items()}
    free = {s: {k: float(v) for k, v in r.items()} for s, r in site_resources.items()}
    for job in running_jobs:
        for site in _running_sites(job, connected):
            _take(free, site, job.resource_spec.get(site, {}))
    waiting = [j for j in submitted_jobs if j.status in _WAITING]
    decisions: list[Decision] = []
    for job in sorted(waiting, key=lambda j: (j.submit_time, j.job_id)):
        ev = _evaluate(job, connected, free, capacity, refused.get(job.job_id, ()))
        required_ok = all(s in ev.usable for s in job.required_sites)
        if required_ok and len(ev.usable) >= job.min_sites:
            reservations = {s: dict(job.resource_spec.get(s, {})) for s in ev.usable}
            for site, need in reservations.items():
                _take(free, site, need)
            decisions.append(Decision(job.job_id, Action.START, tuple(ev.usable), reservations))
        elif now >= job.submit_time + job.schedule_timeout:
            decisions.append(Decision(job.job_id, Action.CAN_NOT_SCHEDULE, reason=_reason(job, ev)))
        else:
            fits = set(ev.usable) | set(ev.busy)
            if all(s in fits for s in job.required_sites) and len(fits) >= job.min_sites:
                for site in sorted(fits):  # hold: later jobs may not take what this one needs
                    _take(free, site, job.resource_spec.get(site, {}))
    return decisions
