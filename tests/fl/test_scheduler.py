"""Scheduler core decisions: site availability, resources, FIFO without starvation, deadlines."""

from __future__ import annotations

from fl_helpers import job
from hypothesis import given, settings
from hypothesis import strategies as st

from cellnet.defs import RunStatus
from cellnet.fl import Action, pick_jobs

SITES = ["site-1", "site-2", "site-3"]
GPU2 = {s: {"num_gpus": 2, "mem_gb": 16} for s in SITES}


def started(decisions):
    return {d.job_id: d.sites for d in decisions if d.action is Action.START}


def test_start_when_sites_are_connected():
    j = job("a", ["server", "site-1", "site-2"], min_sites=2)
    (d,) = pick_jobs([j], SITES, {}, [], now=1.0)
    assert (d.job_id, d.action, d.sites) == ("a", Action.START, ("site-1", "site-2"))
    assert d.reservations == {"site-1": {}, "site-2": {}} and d.status is None


def test_waits_then_cannot_schedule_with_reason():
    j = job("a", ["site-1", "site-2", "site-3"], min_sites=2, required=["site-3"], timeout=60)
    assert pick_jobs([j], ["site-1"], {}, [], now=59.0) == []
    (d,) = pick_jobs([j], ["site-1"], {}, [], now=60.0)
    assert d.action is Action.CAN_NOT_SCHEDULE and d.status is RunStatus.FINISHED_CANT_SCHEDULE
    assert d.reason == (
        "required site(s) unavailable: site-3 (not connected); "
        "1 of the 2 site(s) needed are available (site-1); other sites: site-2: not connected"
    )


def test_partial_deploy_when_min_sites_met():
    j = job("a", SITES, min_sites=2)
    assert started(pick_jobs([j], ["site-1", "site-3"], {}, [], 0.0)) == {"a": ("site-1", "site-3")}


def test_resources_limit_concurrency_and_count_running_jobs():
    spec = {s: {"num_gpus": 1} for s in SITES}
    jobs = [job(n, SITES, spec=spec, min_sites=3, submit_time=i) for i, n in enumerate("abc")]
    assert list(started(pick_jobs(jobs, SITES, GPU2, [], 0.0))) == ["a", "b"]
    running = [job("r", SITES, spec=spec, status=RunStatus.RUNNING, job_clients=SITES)]
    assert list(started(pick_jobs(jobs, SITES, GPU2, running, 0.0))) == ["a"]


def test_refused_and_too_small_sites_are_reported():
    spec = {"site-1": {"num_gpus": 1}, "site-2": {"num_gpus": 4}}
    j = job("a", ["site-1", "site-2"], spec=spec, min_sites=2, timeout=1)
    (d,) = pick_jobs([j], SITES, GPU2, [], now=5.0, refused={"a": ["site-1"]})
    assert d.action is Action.CAN_NOT_SCHEDULE
    assert "site-1: refused the reservation" in d.reason
    assert "site-2: too small: num_gpus needs 4, 2 free of 2" in d.reason


def test_missing_resource_counts_as_zero_capacity():
    j = job("a", ["site-1"], spec={"site-1": {"fpga": 1}}, timeout=1)
    (d,) = pick_jobs([j], SITES, GPU2, [], now=2.0)
    assert "fpga needs 1, 0 free of 0" in d.reason


def test_big_job_is_not_starved_by_later_small_jobs():
    cap = {"site-1": {"num_gpus": 4}}
    running = [job("r", ["site-1"], spec={"site-1": {"num_gpus": 2}}, status=RunStatus.RUNNING)]
    big = job("big", ["site-1"], spec={"site-1": {"num_gpus": 4}}, submit_time=1)
    small = job("small", ["site-1"], spec={"site-1": {"num_gpus": 1}}, submit_time=2)
    assert pick_jobs([big, small], ["site-1"], cap, running, 3.0) == []
    assert list(started(pick_jobs([big, small], ["site-1"], cap, [], 3.0))) == ["big"]


def test_backfill_on_sites_the_waiting_job_does_not_need():
    running = [job("r", ["site-1"], spec={"site-1": {"num_gpus": 1}}, status=RunStatus.RUNNING)]
    big = job("big", ["site-1"], spec={"site-1": {"num_gpus": 2}}, submit_time=1)
    other = job("other", ["site-2"], spec={"site-2": {"num_gpus": 2}}, submit_time=2)
    assert list(started(pick_jobs([big, other], SITES, GPU2, running, 3.0))) == ["other"]


def test_job_waiting_for_a_site_does_not_block_others():
    waiting = job("w", ["site-3"], spec={"site-3": {"num_gpus": 2}}, submit_time=1)
    later = job("l", ["site-1"], spec={"site-1": {"num_gpus": 2}}, submit_time=2)
    assert list(started(pick_jobs([waiting, later], ["site-1"], GPU2, [], 3.0))) == ["l"]


def test_fifo_order_and_non_waiting_jobs_ignored():
    spec = {"site-1": {"num_gpus": 2}}
    late = job("late", ["site-1"], spec=spec, submit_time=5)
    early = job("early", ["site-1"], spec=spec, submit_time=1)
    done = job("done", ["site-1"], status=RunStatus.FINISHED_COMPLETED)
    assert list(started(pick_jobs([late, early, done], SITES, GPU2, [], 9.0))) == ["early"]


def test_all_sites_job_uses_connected_sites():
    j = job("a", ["@ALL"], min_sites=2, required=["site-2"])
    assert started(pick_jobs([j], ["site-1", "site-2"], {}, [], 0)) == {"a": ("site-1", "site-2")}
    assert pick_jobs([j], ["site-1", "site-3"], {}, [], 0) == []


# --- properties --------------------------------------------------------------------------

NAMES = [f"site-{i}" for i in range(4)]
amount = st.integers(0, 3)
specs = st.dictionaries(st.sampled_from(NAMES), st.fixed_dictionaries({"gpu": amount}))


@st.composite
def scenarios(draw):
    caps = draw(st.dictionaries(st.sampled_from(NAMES), st.fixed_dictionaries({"gpu": amount})))
    connected = draw(st.sets(st.sampled_from(NAMES)))
    jobs = []
    for i in range(draw(st.integers(0, 6))):
        deploy = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
        required = draw(st.lists(st.sampled_from(deploy), max_size=2, unique=True))
        spec = {s: r for s, r in draw(specs).items() if s in deploy}
        min_sites = draw(st.integers(1, len(deploy)))
        jobs.append(
            job(f"j{i}", deploy, spec=spec, min_sites=min_sites, required=required,
                submit_time=draw(st.integers(0, 5)), timeout=draw(st.integers(1, 10)))
        )  # fmt: skip
    refused = draw(st.dictionaries(st.sampled_from([j.job_id for j in jobs] or ["x"]),
                                   st.sets(st.sampled_from(NAMES))))  # fmt: skip
    return caps, connected, jobs, refused, draw(st.integers(0, 20))


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_decisions_never_over_reserve_and_honour_requirements(scenario):
    caps, connected, jobs, refused, now = scenario
    decisions = pick_jobs(jobs, connected, caps, [], now, refused)
    by_id = {j.job_id: j for j in jobs}
    used: dict[str, float] = {}
    assert len({d.job_id for d in decisions}) == len(decisions)
    for d in decisions:
        j = by_id[d.job_id]
        if d.action is Action.CAN_NOT_SCHEDULE:
            assert now >= j.submit_time + j.schedule_timeout and d.reason
            continue
        assert set(j.required_sites) <= set(d.sites)
        assert len(d.sites) >= j.min_sites
        assert set(d.sites) <= connected - set(refused.get(j.job_id, ()))
        for site, need in d.reservations.items():
            used[site] = used.get(site, 0) + need.get("gpu", 0)
    for site, total in used.items():
        assert total <= caps.get(site, {}).get("gpu", 0)
