"""Jobs end to end: server + 2 sites over mTLS in this process, job cells as real processes."""

from __future__ import annotations

import pytest
from rt_helpers import federation, job_copy

from cellnet.defs import JobMetaKey, ReturnCode, RunStatus
from cellnet.fl.job_store import STATUS_HISTORY

pytestmark = pytest.mark.slow
F = RunStatus
ENDED = [s for s in RunStatus if s.startswith("FINISHED:")]


def _history(meta) -> list[str]:
    return [h["status"] for h in meta[STATUS_HISTORY]]


async def test_hello_echo_runs_to_completed(kits, tmp_path):
    async with federation(kits, tmp_path) as fed:
        job = job_copy(tmp_path)
        sub = await fed.client.submit(job, submit_token="tok-1")
        again = await fed.client.submit(job, submit_token="tok-1")
        assert again == {**sub, "created": False}  # idempotent submit
        meta = await fed.client.wait_for_status(sub["job_id"], ENDED, timeout=30)
        assert meta[JobMetaKey.STATUS] == F.FINISHED_COMPLETED, meta
        assert _history(meta) == [F.SUBMITTED, F.DISPATCHED, F.RUNNING, F.FINISHED_COMPLETED]
        assert sorted(meta[JobMetaKey.JOB_CLIENTS]) == ["site-1", "site-2"]
        results = await fed.client.get_results(sub["job_id"])
        for site in ("site-1", "site-2"):
            echo = results["echo"][site]
            assert echo["rc"] == ReturnCode.OK
            assert echo["x"] == [2.0 * i for i in range(8)]
            assert echo["site"] == site and echo["peer_job"] == sub["job_id"]
        assert results["unknown"] == ReturnCode.TASK_UNKNOWN
        assert [j["job_id"] for j in await fed.client.list_jobs()] == [sub["job_id"]]
        assert fed.runner.active == {}
        for site in fed.sites.values():
            assert site.jobs == {} and site.free() == {"slots": 1.0}
