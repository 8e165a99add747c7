"""The server runner keeps disk I/O off the trio thread and reads identities from certificates."""

from __future__ import annotations

import threading

import pytest
from rt_helpers import federation, job_copy

from cellnet.defs import JobMetaKey, RunStatus
from cellnet.fl import _atomic
from cellnet.fl.runtime import peer_identity

pytestmark = pytest.mark.slow
ENDED = [s for s in RunStatus if s.startswith("FINISHED:")]


async def test_store_writes_run_in_worker_threads_and_submitter_is_the_cert(
        kits, tmp_path, monkeypatch):
    on_main: list[str] = []
    real = _atomic.write_bytes

    def spy(path, data):
        if threading.current_thread() is threading.main_thread():
            on_main.append(str(path))
        return real(path, data)

    monkeypatch.setattr(_atomic, "write_bytes", spy)
    async with federation(kits, tmp_path) as fed:
        job_id = (await fed.client.submit(job_copy(tmp_path), submit_token="io"))["job_id"]
        meta = await fed.client.wait_for_status(job_id, ENDED, timeout=30)
        admin = peer_identity(fed.server.cell, "site-3--admin")
        assert peer_identity(fed.server.cell, "no-such-peer") is None
    assert meta[JobMetaKey.STATUS] == RunStatus.FINISHED_COMPLETED
    assert on_main == []  # every fsync'ing write (submit, statuses, results) was off-thread
    # the admin-like cell runs with site-3's certificate: that is who submitted
    assert (admin.name, admin.org) == ("site-3", "org-3")
    assert (meta[JobMetaKey.SUBMITTER_NAME], meta[JobMetaKey.SUBMITTER_ORG],
            meta[JobMetaKey.SUBMITTER_ROLE]) == ("site-3", "org-3", "")


async def test_each_app_zip_is_built_once_off_the_trio_thread_for_all_its_sites():
    import hashlib

    import trio

    from cellnet.errors import JobError
    from cellnet.fl.runtime.server_runner import _Apps

    built: list[tuple[str, bool]] = []

    class FakeJob:
        def get_application(self, name):
            built.append((name, threading.current_thread() is threading.main_thread()))
            if name == "bad":
                raise JobError("no such app")
            return name.encode() * 3

    apps = _Apps(FakeJob())
    got: list[tuple[bytes, str]] = []
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(lambda: _append(got, apps.get("app")))
    assert got == [(b"appappapp", hashlib.sha256(b"appappapp").hexdigest())] * 4
    assert built == [("app", False)]
    for _ in range(2):  # a failure is not kept: every site asking gets the error
        with pytest.raises(JobError, match="no such app"):
            await apps.get("bad")
    assert [n for n, _ in built] == ["app", "bad", "bad"]


async def _append(out, value):
    out.append(await value)
