"""Crash safety: no torn file, and a submit interrupted at any step recovers to all or nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from fl_helpers import make_job_folder

from cellnet.defs import JobMetaKey, RunStatus
from cellnet.fl import JobStore, _atomic, zip_job_folder


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


@pytest.fixture
def content(tmp_path):
    return zip_job_folder(make_job_folder(tmp_path / "src"))


def test_hard_crash_before_rename_leaves_old_meta_and_a_cleaned_temp(tmp_path, content):
    ws = tmp_path / "ws"
    job_id = JobStore(ws).submit(content).job_id
    script = textwrap.dedent(
        f"""
        import os
        from cellnet.fl import JobStore
        store = JobStore({str(ws)!r})
        os.replace = lambda *a, **k: os._exit(17)   # the machine stops right before the rename
        store.set_status({job_id!r}, "RUNNING")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert proc.returncode == 17
    job_dir = ws / "jobs" / job_id
    leftovers = [p.name for p in job_dir.iterdir() if _atomic.is_temp_name(p.name)]
    assert len(leftovers) == 1 and leftovers[0].startswith(".meta.json.tmp-")
    assert json.loads((job_dir / "meta.json").read_text())["status"] == "SUBMITTED"
    reopened = JobStore(ws)
    assert not [p for p in job_dir.iterdir() if _atomic.is_temp_name(p.name)]
    assert len(reopened.recover().removed) == 1
    assert reopened.get_meta(job_id)[JobMetaKey.STATUS] == RunStatus.SUBMITTED


def test_failed_replace_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    _atomic.write_json(path, {"v": 1})

    def boom(*_a, **_k):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        _atomic.write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4])
def test_submit_interrupted_at_each_write_recovers_all_or_nothing(
    tmp_path, content, monkeypatch, crash_at
):
    """Writes of a token submit: 1 record CREATING, 2 data.zip, 3 meta.json, 4 record CREATED."""
    ws = tmp_path / "ws"
    store = JobStore(ws)
    real = _atomic.write_bytes
    calls = []

    def dying_write(path, data):
        calls.append(path.name)
        if len(calls) == crash_at:
            raise Crash
        real(path, data)

    monkeypatch.setattr(_atomic, "write_bytes", dying_write)
    with pytest.raises(Crash):
        store.submit(content, submit_token="tok")
    monkeypatch.setattr(_atomic, "write_bytes", real)

    reopened = JobStore(ws)
    report = reopened.recover()
    jobs = reopened.list_jobs()
    committed = crash_at >= 4  # meta.json (write 3) completed only when the crash is later
    assert len(jobs) == (1 if committed else 0)
    if crash_at in (2, 3):
        assert len(report.rolled_back_submits) == 1
    if committed:
        assert report.completed_submits == [jobs[0].job_id]
    assert [p.name for p in (ws / "jobs").iterdir()] == [j.job_id for j in jobs]
    retry = reopened.submit(content, submit_token="tok")
    assert retry.created is not committed
    assert [j.job_id for j in reopened.list_jobs()] == [retry.job_id]
    if committed:
        assert retry.job_id == jobs[0].job_id


def test_retry_without_restart_completes_a_half_written_submit(tmp_path, content, monkeypatch):
    store = JobStore(tmp_path / "ws")
    real = _atomic.write_bytes

    def fail_on_meta(path, data):
        if path.name == "meta.json":
            raise OSError("transient")
        real(path, data)

    monkeypatch.setattr(_atomic, "write_bytes", fail_on_meta)
    with pytest.raises(OSError, match="transient"):
        store.submit(content, submit_token="tok")
    monkeypatch.setattr(_atomic, "write_bytes", real)
    first = store.submit(content, submit_token="tok")
    assert first.created
    again = store.submit(content, submit_token="tok")
    assert (again.job_id, again.created) == (first.job_id, False)
    assert len(store.list_jobs()) == 1


def test_interrupted_delete_is_finished_on_recover(tmp_path, content, monkeypatch):
    store = JobStore(tmp_path / "ws")
    job_id = store.submit(content, submit_token="tok").job_id
    monkeypatch.setattr("shutil.rmtree", lambda *_a, **_k: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        store.delete(job_id)
    monkeypatch.undo()
    assert (tmp_path / "ws" / "jobs" / f".deleting-{job_id}").is_dir()
    reopened = JobStore(tmp_path / "ws")
    report = reopened.recover()
    assert report.removed == [str(tmp_path / "ws" / "jobs" / f".deleting-{job_id}")]
    assert reopened.list_jobs() == []
    assert list((tmp_path / "ws" / "jobs").iterdir()) == []
