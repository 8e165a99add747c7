"""Jobs end to end: server + 2 sites over mTLS in this process, job cells as real processes."""

from __future__ import annotations

import json

import pytest
import trio
from rt_helpers import federation, job_copy

from cellnet.defs import JobMetaKey, ReturnCode, RunStatus
from cellnet.errors import JobError, JobValidationError
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
        with trio.fail_after(10):  # the cleanup after the status change ends in bounded time
            while fed.runner.active or any(s.jobs for s in fed.sites.values()):
                await trio.sleep(0.02)
        for site in fed.sites.values():
            assert site.free() == {"slots": 1.0}


SLOW_EXECUTOR = '''
import os, time
from cellnet.fl.runtime import Executor

class Slow(Executor):
    def __init__(self, mode="sleep"):
        self.mode = mode

    def execute(self, task_name, dxo, fl_ctx, abort_signal):
        if self.mode == "crash":
            os._exit(3)
        time.sleep(60)
'''
CLIENT_CFG = ('{"executors": [{"tasks": ["echo"], '
              '"executor": {"path": "slow.Slow", "args": {"mode": "%s"}}}]}')


async def test_abort_while_running_stops_every_job_process(kits, tmp_path):
    async with federation(kits, tmp_path) as fed:
        job = job_copy(tmp_path, **{"app_client/custom/slow.py": SLOW_EXECUTOR,
                                    "app_client/config/config_fed_client.json":
                                        CLIENT_CFG % "sleep"})
        sub = await fed.client.submit(job)
        job_id = sub["job_id"]
        await fed.client.wait_for_status(job_id, [F.RUNNING], timeout=30)
        children = [s.node.children[f"{n}.{job_id}"] for n, s in fed.sites.items()]
        children.append(fed.server.children[f"server.{job_id}"])
        with trio.fail_after(10):  # bounded
            assert await fed.client.abort(job_id) == F.FINISHED_ABORTED
        assert all(c.returncode is not None for c in children)
        meta = await fed.client.get_meta(job_id)
        assert _history(meta) == [F.SUBMITTED, F.DISPATCHED, F.RUNNING, F.FINISHED_ABORTED]
        with pytest.raises(JobError, match="already ended"):
            await fed.client.abort(job_id)


async def test_abort_while_starting(kits, tmp_path):
    async with federation(kits, tmp_path) as fed:
        sub = await fed.client.submit(job_copy(tmp_path))
        job_id = sub["job_id"]
        with trio.fail_after(10):
            while RunStatus((await fed.client.get_meta(job_id))["status"]) == F.SUBMITTED:
                await trio.sleep(0.005)
            status = await fed.client.abort(job_id)
        assert status == F.FINISHED_ABORTED
        assert fed.runner.active == {}
        for name, site in fed.sites.items():
            child = site.node.children.get(f"{name}.{job_id}")
            assert child is None or child.returncode is not None


async def test_site_process_crash_ends_job_abnormal_and_parents_live_on(kits, tmp_path):
    async with federation(kits, tmp_path) as fed:
        job = job_copy(tmp_path, **{"app_client/custom/slow.py": SLOW_EXECUTOR,
                                    "app_client/config/config_fed_client.json":
                                        CLIENT_CFG % "crash"})
        job_id = (await fed.client.submit(job))["job_id"]
        meta = await fed.client.wait_for_status(job_id, ENDED, timeout=30)
        assert meta["status"] == F.FINISHED_ABNORMAL
        assert "exited with status 3" in meta["status_reason"]
        errors = await fed.client.show_errors(job_id)
        assert any("exited with status 3" in e["error"] for e in errors)
        # the parents still serve: the next job completes
        ok = (await fed.client.submit(job_copy(tmp_path, "job2")))["job_id"]
        meta = await fed.client.wait_for_status(ok, ENDED, timeout=30)
        assert meta["status"] == F.FINISHED_COMPLETED


async def test_workflow_exception_is_recorded_with_its_traceback(kits, tmp_path):
    bad = "from cellnet.fl.runtime import Controller\n" \
          "class EchoWorkflow(Controller):\n" \
          "    def __init__(self, **kw): pass\n" \
          "    async def control_flow(self, fl_ctx):\n" \
          "        raise RuntimeError('workflow broke')\n"
    async with federation(kits, tmp_path) as fed:
        job = job_copy(tmp_path, **{"app_server/custom/echo_workflow.py": bad})
        job_id = (await fed.client.submit(job))["job_id"]
        meta = await fed.client.wait_for_status(job_id, ENDED, timeout=30)
        assert meta["status"] == F.FINISHED_EXECUTION_EXCEPTION
        errors = await fed.client.show_errors(job_id)
        assert "Traceback" in errors[0]["error"] and "workflow broke" in errors[0]["error"]
        assert "workflow broke" in meta["status_reason"]


async def test_invalid_job_refused_and_unschedulable_job_ends(kits, tmp_path):
    async with federation(kits, tmp_path, slots=1.0) as fed:
        bad = job_copy(tmp_path, "bad", **{"meta.json": '{"name": "x", "deploy_map": {'})
        with pytest.raises(JobValidationError) as info:
            await fed.client.submit(bad)
        assert any("line" in p for p in info.value.problems)
        assert await fed.client.list_jobs() == []
        big = job_copy(tmp_path, "big", **{"meta.json": json.dumps({
            "name": "big", "deploy_map": {"app_server": ["server"],
                                          "app_client": ["site-1", "site-2"]},
            "min_clients": 2, "resource_spec": {"site-1": {"slots": 5}},
            "schedule_timeout": 0.3})})
        job_id = (await fed.client.submit(big))["job_id"]
        meta = await fed.client.wait_for_status(job_id, ENDED, timeout=10)
        assert meta["status"] == F.FINISHED_CANT_SCHEDULE
        assert "slots" in meta["status_reason"]


async def test_a_failed_deploy_ends_the_job_failed_to_run_and_stops_what_started(kits, tmp_path):
    async with federation(kits, tmp_path) as fed:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("site-2 cannot make its job folder under a file")
        fed.sites["site-2"].root = blocker / "work"
        sub = await fed.client.submit(job_copy(tmp_path))
        meta = await fed.client.wait_for_status(sub["job_id"], [F.FAILED_TO_RUN, *ENDED],
                                                timeout=30)
        assert meta[JobMetaKey.STATUS] == F.FAILED_TO_RUN, meta
        assert _history(meta) == [F.SUBMITTED, F.DISPATCHED, F.FAILED_TO_RUN]
        assert "deploy to site-2 failed" in meta["status_reason"]
        errors = await fed.client.show_errors(sub["job_id"])
        assert any("site-2" in e["error"] for e in errors)
        with trio.fail_after(15):  # site-1's job cell, if it started, is stopped again
            while fed.runner.active or any(s.jobs and any(
                    j.child is not None and j.child.returncode is None for j in s.jobs.values())
                    for s in fed.sites.values()):
                await trio.sleep(0.05)
        assert fed.sites["site-1"].free() == {"slots": 1.0}


async def test_a_failing_job_task_is_logged_and_the_runtime_keeps_serving(kits, tmp_path, caplog):
    async with federation(kits, tmp_path) as fed:
        async def broken(job_id):
            raise RuntimeError(f"bug while handling {job_id}")

        fed.runner._spawn(broken, "job-x")
        await trio.sleep(0.1)
        assert "bug while handling job-x" in caplog.text
        sub = await fed.client.submit(job_copy(tmp_path))  # the runtime still schedules
        meta = await fed.client.wait_for_status(sub["job_id"], ENDED, timeout=30)
        assert meta[JobMetaKey.STATUS] == F.FINISHED_COMPLETED
