"""Scenarios with real processes: ``cellnet run`` server and sites, ``cellnet job`` as an admin.

Every process runs on 127.0.0.1 in its own session and is killed (with its
job cells) when the test ends; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from rt_helpers import job_copy

from cellnet.admin import admin_client
from cellnet.defs import JobMetaKey, RunStatus
from cellnet.fl.job_store import STATUS_HISTORY
from cellnet.security.local import provision_local

pytestmark = pytest.mark.slow
F = RunStatus
ENDED = [s for s in RunStatus if s.startswith("FINISHED:")]
ADMIN = "admin@org-a.com"
LEAD = "lead@org-b.com"
SLOW_EXECUTOR = '''
import time
from cellnet.fl.runtime import Executor

class Slow(Executor):
    def execute(self, task_name, dxo, fl_ctx, abort_signal):
        time.sleep(60)
'''
SLOW_CFG = '{"executors": [{"tasks": ["echo"], "executor": {"path": "slow.Slow"}}]}'


@pytest.fixture(scope="module")
def pkits(tmp_path_factory) -> Path:
    return provision_local(tmp_path_factory.mktemp("runkits"), "scn", ("site-1", "site-2"),
                           admins=[(ADMIN, "org-a", "project_admin"), (LEAD, "org-b", "lead")])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """``cellnet run`` processes of one test, each in its own session (killed with its children)."""

    def __init__(self, kits: Path, root: Path) -> None:
        self.kits, self.root, self.port = kits, root, _free_port()
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *extra: str) -> None:
        log = open(self.root / f"{name}.out", "ab")
        argv = [sys.executable, "-m", "cellnet.cli", "run", str(self.kits / name),
                "--workspace", str(self.root / "ws" / name), "--port", str(self.port), *extra]
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        log.close()

    def kill(self, name: str, graceful: float = 0.0) -> None:
        """SIGTERM (when ``graceful``: then wait that long), then SIGKILL its process group."""
        proc = self.procs.pop(name)
        if graceful:
            proc.terminate()
            try:
                proc.wait(graceful)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def close(self) -> None:
        for name in sorted(self.procs, key=lambda n: n == "server"):  # sites first
            self.kill(name, graceful=8.0)

    def output(self, name: str) -> str:
        return (self.root / f"{name}.out").read_text(errors="replace")

    async def job_cli(self, *args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "cellnet.cli", "job", *args[:1],
                str(self.kits / ADMIN), "--port", str(self.port), *args[1:]]
        with trio.fail_after(60):
            return await trio.run_process(argv, capture_stdout=True, capture_stderr=True,
                                          check=False)


@pytest.fixture
def procs(pkits, tmp_path):
    p = Procs(pkits, tmp_path)
    yield p
    p.close()


def _slow_job(tmp_path: Path) -> Path:
    """A job whose one site (site-1) sleeps on its task: it stays RUNNING."""
    return job_copy(tmp_path, "slow", **{
        "app_client/custom/slow.py": SLOW_EXECUTOR,
        "app_client/config/config_fed_client.json": SLOW_CFG,
        "meta.json": json.dumps({"name": "slow", "min_clients": 1,
                                 "deploy_map": {"app_server": ["server"],
                                                "app_client": ["site-1"]}})})


def _history(meta) -> list[str]:
    return [h["status"] for h in meta[STATUS_HISTORY]]


async def _ready(procs: Procs, name: str = "server", times: int = 1) -> None:
    """Wait (bounded) until ``name`` printed that its job runtime is ready ``times`` times."""
    with trio.fail_after(20):
        while procs.output(name).count("job runtime ready") < times:
            await trio.sleep(0.05)


async def _wait(client, job_id, statuses, timeout=30.0):
    return await client.wait_for_status(job_id, statuses, timeout=timeout, poll=0.1)


async def test_cellnet_run_and_job_submit_complete_a_job(procs, tmp_path):
    procs.start("server", "--project", str(procs.kits.parent / "project.toml"))
    procs.start("site-1", "--resources", '{"slots": 1}')
    procs.start("site-2", "--resources", '{"slots": 1}')
    await _ready(procs)
    job = job_copy(tmp_path)
    (job / "app_server" / "custom" / "weights.bin").write_bytes(os.urandom(6 << 20))  # streams
    done = await procs.job_cli("submit", str(job), "--token", "tok-9", "--wait", "40")
    out = done.stdout.decode()
    assert done.returncode == 0, (out, done.stderr.decode(), procs.output("server"))
    assert "uploading the job: 6.0 MiB in" in done.stderr.decode()  # the transfer's progress
    assert "FINISHED:COMPLETED" in out and "RUNNING" in out
    job_id = out.split("submitted: job ", 1)[1].split()[0]
    again = await procs.job_cli("submit", str(job), "--token", "tok-9", "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout) == {"job_id": job_id, "created": False, "warnings": []}
    status = await procs.job_cli("status", job_id)
    assert f"job {job_id}: FINISHED:COMPLETED" in status.stdout.decode()
    async with admin_client(procs.kits / LEAD, port=procs.port) as client:
        meta = await client.get_meta(job_id)
        jobs = await client.list_jobs()
        other = (await client.submit(job_copy(tmp_path, "two")))["job_id"]
        meta2 = await _wait(client, other, ENDED)
    assert [j["job_id"] for j in jobs] == [job_id]  # the duplicate made no second job
    assert _history(meta) == [F.SUBMITTED, F.DISPATCHED, F.RUNNING, F.FINISHED_COMPLETED]
    assert sorted(meta[JobMetaKey.JOB_DEPLOY_DETAIL]) == ["site-1: OK", "site-2: OK"]
    assert meta[JobMetaKey.DURATION] >= 0 and meta[JobMetaKey.RESULT_LOCATION]
    assert (meta[JobMetaKey.SUBMITTER_NAME], meta[JobMetaKey.SUBMITTER_ORG],
            meta[JobMetaKey.SUBMITTER_ROLE]) == (ADMIN, "org-a", "project_admin")
    assert (meta2[JobMetaKey.SUBMITTER_NAME], meta2[JobMetaKey.SUBMITTER_ORG],
            meta2[JobMetaKey.SUBMITTER_ROLE]) == (LEAD, "org-b", "lead")
    assert meta2[JobMetaKey.STATUS] == F.FINISHED_COMPLETED
    bad = await procs.job_cli("status", "no-such-job")
    assert bad.returncode == 1 and b"no job" in bad.stderr
    unknown_site = job_copy(tmp_path, "bad", **{"meta.json": json.dumps({
        "name": "bad", "deploy_map": {"app_server": ["server"], "app_client": ["site-7"]}})})
    refused = await procs.job_cli("submit", str(unknown_site))
    assert refused.returncode == 1 and b"site-7" in refused.stderr  # --project knows the sites
    # abort a running job from the command line; the reason names the admin's certificate
    sub = await procs.job_cli("submit", str(_slow_job(tmp_path)), "--json")
    slow_id = json.loads(sub.stdout)["job_id"]
    async with admin_client(procs.kits / ADMIN, port=procs.port) as client:
        await _wait(client, slow_id, [F.RUNNING])
        aborted = await procs.job_cli("abort", slow_id)
        meta3 = await client.get_meta(slow_id)
    assert aborted.returncode == 0 and "FINISHED:ABORTED" in aborted.stdout.decode()
    assert _history(meta3) == [F.SUBMITTED, F.DISPATCHED, F.RUNNING, F.FINISHED_ABORTED]
    assert meta3["status_reason"] == f"aborted by {ADMIN} (org-a, project_admin)"
    errors = await procs.job_cli("errors", slow_id, "--json")
    assert errors.returncode == 0 and isinstance(json.loads(errors.stdout), list)


async def test_server_restart_recovers_running_and_submitted_jobs(procs, tmp_path):
    procs.start("server")
    procs.start("site-1", "--resources", '{"slots": 2}')
    await _ready(procs)
    slow = _slow_job(tmp_path)
    async with admin_client(procs.kits / ADMIN, port=procs.port, timeout=15) as client:
        running = (await client.submit(slow))["job_id"]
        await _wait(client, running, [F.RUNNING])
        waiting = (await client.submit(job_copy(tmp_path), submit_token="t-echo"))["job_id"]
        await trio.sleep(0.3)  # a scheduling pass: site-2 is missing, so it waits
        assert (await client.get_meta(waiting))[JobMetaKey.STATUS] == F.SUBMITTED
    procs.kill("server")  # no clean shutdown: the store still says RUNNING
    procs.start("server")
    procs.start("site-2", "--resources", '{"slots": 1}')
    await _ready(procs, times=2)
    async with admin_client(procs.kits / ADMIN, port=procs.port) as client:
        meta = await client.get_meta(running)
        done = await _wait(client, waiting, ENDED, timeout=40)
        again = await client.submit(tmp_path / "job", submit_token="t-echo")
    assert meta[JobMetaKey.STATUS] == F.FINISHED_ABNORMAL
    assert _history(meta) == [F.SUBMITTED, F.DISPATCHED, F.RUNNING, F.FINISHED_ABNORMAL]
    assert "server restarted" in meta["status_reason"]
    assert done[JobMetaKey.STATUS] == F.FINISHED_COMPLETED, done
    assert _history(done) == [F.SUBMITTED, F.DISPATCHED, F.RUNNING, F.FINISHED_COMPLETED]
    assert again["job_id"] == waiting and not again["created"]  # the token survived too
    # site-1 learnt at its new login that the old job is gone and stopped its process
    with trio.fail_after(10):
        while "not active on the server" not in procs.output("site-1"):
            await trio.sleep(0.1)
