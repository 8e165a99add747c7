"""Job store: submit meta, token idempotence, transitions, results, delete/clone, recovery."""

from __future__ import annotations

import io
import itertools
import zipfile

import pytest
from fl_helpers import SITES, default_meta, make_job_folder

from cellnet.defs import JobMetaKey, RunStatus, SubmitRecordKey, SubmitRecordState
from cellnet.errors import (
    IllegalTransitionError,
    JobError,
    JobNotFoundError,
    JobValidationError,
    SubmitConflictError,
)
from cellnet.fl import LEGAL_TRANSITIONS, JobStore, Submitter, check_transition, zip_job_folder

ALICE = Submitter("alice@org.com", "org", "lead")
S = RunStatus


class Clock:
    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def content(tmp_path):
    return zip_job_folder(make_job_folder(tmp_path / "src"))


@pytest.fixture
def store(tmp_path):
    return JobStore(tmp_path / "ws", clock=Clock())


def test_submit_records_meta_and_content(store, content):
    res = store.submit(content, submitter=ALICE, sites=SITES, job_folder_name="hello-job")
    assert res.created and res.warnings == ()
    meta = store.get_meta(res.job_id)
    assert meta[JobMetaKey.JOB_ID] == res.job_id
    assert meta[JobMetaKey.STATUS] == S.SUBMITTED
    assert meta[JobMetaKey.JOB_NAME] == "hello"
    assert meta[JobMetaKey.SUBMIT_TIME] == 1_700_000_001.0
    assert meta[JobMetaKey.SUBMIT_TIME_ISO] == "2023-11-14T22:13:21+00:00"
    assert (meta["submitter_name"], meta["submitter_org"], meta["submitter_role"]) == (
        "alice@org.com", "org", "lead",
    )  # fmt: skip
    assert meta[JobMetaKey.SCHEDULE_COUNT] == 0 and meta[JobMetaKey.SCHEDULE_HISTORY] == []
    assert meta[JobMetaKey.JOB_FOLDER_NAME] == "hello-job"
    assert meta[JobMetaKey.DEPLOY_MAP] == default_meta()["deploy_map"]
    assert meta[JobMetaKey.MIN_CLIENTS] == 2 and meta[JobMetaKey.MANDATORY_CLIENTS] == []
    assert meta[JobMetaKey.RESOURCE_SPEC] == {"site-1": {"num_gpus": 1}}
    assert meta[JobMetaKey.CONTENT_LOCATION] == f"jobs/{res.job_id}/data.zip"
    assert [h["status"] for h in meta["status_history"]] == ["SUBMITTED"]
    assert store.get_content(res.job_id) == content
    job = store.get_job(res.job_id)
    assert job.min_sites == 2 and job.get_deployment() == meta[JobMetaKey.DEPLOY_MAP]
    with zipfile.ZipFile(io.BytesIO(job.get_application("srv"))) as zf:
        assert "config/config_fed.json" in zf.namelist()


def test_submitted_meta_cannot_preset_system_fields(tmp_path, store):
    meta = default_meta(status="FINISHED:COMPLETED", job_id="mine", cloned_from="x")
    data = zip_job_folder(make_job_folder(tmp_path / "j", meta))
    job_id = store.submit(data).job_id
    got = store.get_meta(job_id)
    assert got["status"] == "SUBMITTED" and got["job_id"] == job_id and "cloned_from" not in got


def test_invalid_submit_changes_nothing(tmp_path, store):
    data = zip_job_folder(make_job_folder(tmp_path / "bad", default_meta(min_clients=9)))
    with pytest.raises(JobValidationError, match="min_sites is 9"):
        store.submit(data, submit_token="t1")
    assert store.list_jobs() == []
    assert list((store.root / "submits").iterdir()) == []
    assert list((store.root / "jobs").iterdir()) == []


def test_same_token_same_content_gives_same_job(tmp_path, store, content):
    first = store.submit(content, submit_token="tok-1", submitter=ALICE)
    again = store.submit(content, submit_token="tok-1", submitter=ALICE)
    assert (again.job_id, again.created) == (first.job_id, False)
    # the same folder zipped by another tool (other timestamps/order) is the same content
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(content)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in reversed(src.infolist()):
            dst.writestr(zipfile.ZipInfo(info.filename, (2020, 5, 5, 1, 2, 3)), src.read(info))
    assert store.submit(buf.getvalue(), submit_token="tok-1").job_id == first.job_id
    assert len(store.list_jobs()) == 1
    other = store.submit(content, submit_token="tok-2")
    assert other.job_id != first.job_id and len(store.list_jobs()) == 2


def test_same_token_different_content_is_refused(tmp_path, store, content):
    store.submit(content, submit_token="tok")
    other = zip_job_folder(make_job_folder(tmp_path / "other", default_meta(name="other")))
    with pytest.raises(SubmitConflictError, match="different content"):
        store.submit(other, submit_token="tok")
    with pytest.raises(JobError, match="non-empty string"):
        store.submit(content, submit_token="")
    assert len(store.list_jobs()) == 1


ALL_PAIRS = list(itertools.product(RunStatus, RunStatus))


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_transition_table(old, new):
    legal = new in LEGAL_TRANSITIONS[old]
    expected = {
        S.SUBMITTED: {S.APPROVED, S.DISPATCHED, S.RUNNING, S.FINISHED_CANT_SCHEDULE,
                      S.FINISHED_ABORTED, S.ABANDONED},
        S.APPROVED: {S.DISPATCHED, S.RUNNING, S.FINISHED_CANT_SCHEDULE, S.FINISHED_ABORTED,
                     S.ABANDONED},
        S.DISPATCHED: {S.RUNNING, S.FAILED_TO_RUN, S.FINISHED_ABORTED, S.FINISHED_ABNORMAL,
                       S.FINISHED_EXECUTION_EXCEPTION},
        S.RUNNING: {S.FINISHED_COMPLETED, S.FINISHED_ABORTED, S.FINISHED_ABNORMAL,
                    S.FINISHED_EXECUTION_EXCEPTION},
    }.get(old, set())  # fmt: skip
    assert legal == (new in expected)
    if legal:
        check_transition(old, new)
    else:
        with pytest.raises(IllegalTransitionError, match=f"from {old} to {new}"):
            check_transition(old, new)


def test_lifecycle_is_recorded_with_times(store, content):
    job_id = store.submit(content).job_id
    store.set_status(job_id, S.DISPATCHED, "deploying")
    store.set_status(job_id, S.RUNNING)
    meta = store.set_status(job_id, S.FINISHED_COMPLETED, "workflow done")
    assert meta[JobMetaKey.START_TIME] == 1_700_000_003.0
    assert meta[JobMetaKey.DURATION] == 1.0
    assert meta["status_reason"] == "workflow done"
    hist = store.get_meta(job_id)["status_history"]
    assert [(h["status"], h["reason"]) for h in hist] == [
        ("SUBMITTED", "submitted"), ("DISPATCHED", "deploying"), ("RUNNING", ""),
        ("FINISHED:COMPLETED", "workflow done"),
    ]  # fmt: skip
    before = store.get_meta(job_id)
    with pytest.raises(IllegalTransitionError):
        store.set_status(job_id, S.RUNNING)
    assert store.get_meta(job_id) == before


def test_schedule_results_and_filters(store, content):
    a = store.submit(content).job_id
    b = store.submit(content).job_id
    meta = store.record_schedule(a, ["site-2", "site-1"])
    assert meta[JobMetaKey.SCHEDULE_COUNT] == 1
    assert meta[JobMetaKey.LAST_SCHEDULE_TIME] == 1_700_000_003.0
    assert meta[JobMetaKey.SCHEDULE_HISTORY][0]["sites"] == ["site-1", "site-2"]
    assert meta[JobMetaKey.JOB_CLIENTS] == ["site-1", "site-2"]
    store.set_status(a, S.RUNNING)
    assert store.get_results(a) is None
    store.save_results(a, b"result-bytes")
    assert store.get_results(a) == b"result-bytes"
    assert store.get_meta(a)[JobMetaKey.RESULT_LOCATION] == f"jobs/{a}/results.zip"
    assert [j.job_id for j in store.list_jobs()] == [a, b]
    assert [j.job_id for j in store.list_jobs({S.SUBMITTED})] == [b]
    assert [j.job_id for j in store.list_jobs({S.RUNNING, S.DISPATCHED})] == [a]


def test_unknown_or_malicious_job_ids(store):
    for bad in ("../../etc", "nope", "", "a/b"):
        with pytest.raises(JobNotFoundError):
            store.get_meta(bad)


def test_clone_and_delete(store, content):
    src = store.submit(content, submit_token="tok").job_id
    store.set_status(src, S.RUNNING)
    with pytest.raises(JobError, match="abort it first"):
        store.delete(src)
    copy = store.clone(src, ALICE)
    meta = store.get_meta(copy)
    assert meta[JobMetaKey.CLONED_FROM] == src and meta[JobMetaKey.STATUS] == S.SUBMITTED
    assert meta[JobMetaKey.SUBMITTER_NAME] == "alice@org.com"
    assert store.get_content(copy) == content
    store.set_status(src, S.FINISHED_ABORTED)
    store.delete(src, deleted_by="admin@org.com")
    with pytest.raises(JobNotFoundError):
        store.get_meta(src)
    with pytest.raises(SubmitConflictError, match="has been deleted"):
        store.submit(content, submit_token="tok")
    assert [j.job_id for j in store.list_jobs()] == [copy]


def test_restart_recovery_marks_running_jobs_abnormal(tmp_path, content):
    store = JobStore(tmp_path / "ws", clock=Clock())
    ids = {}
    for status in (S.SUBMITTED, S.DISPATCHED, S.RUNNING, S.FINISHED_COMPLETED):
        ids[status] = store.submit(content).job_id
    store.set_status(ids[S.DISPATCHED], S.DISPATCHED)
    store.set_status(ids[S.RUNNING], S.RUNNING)
    store.set_status(ids[S.FINISHED_COMPLETED], S.RUNNING)
    store.set_status(ids[S.FINISHED_COMPLETED], S.FINISHED_COMPLETED)
    reopened = JobStore(tmp_path / "ws", clock=Clock(1_800_000_000.0))
    report = reopened.recover()
    assert sorted(report.abnormal) == sorted([ids[S.DISPATCHED], ids[S.RUNNING]])
    status = {s: reopened.get_meta(i)[JobMetaKey.STATUS] for s, i in ids.items()}
    assert status == {
        S.SUBMITTED: "SUBMITTED", S.DISPATCHED: "FINISHED:ABNORMAL",
        S.RUNNING: "FINISHED:ABNORMAL", S.FINISHED_COMPLETED: "FINISHED:COMPLETED",
    }  # fmt: skip
    reason = reopened.get_meta(ids[S.RUNNING])["status_reason"]
    assert reason == "server restarted while the job was RUNNING"
    assert [j.job_id for j in reopened.list_jobs({S.SUBMITTED})] == [ids[S.SUBMITTED]]
    assert reopened.recover().abnormal == []


def test_submit_record_fields(store, content):
    job_id = store.submit(content, submit_token="tok", submitter=ALICE).job_id
    (path,) = (store.root / "submits").iterdir()
    record = JobStore._read_json(path)
    assert record[SubmitRecordKey.STATE] == SubmitRecordState.CREATED
    assert record[SubmitRecordKey.JOB_ID] == job_id
    assert record[SubmitRecordKey.SUBMIT_TOKEN] == "tok"
    assert record[SubmitRecordKey.SUBMITTER_NAME] == "alice@org.com"
    assert len(record[SubmitRecordKey.JOB_CONTENT_HASH]) == 64


def test_errors_are_recorded_durably_and_not_settable_by_a_submit(tmp_path, store, content):
    from cellnet.fl.job_store import ERRORS

    job_id = store.submit(content).job_id
    store.record_error(job_id, "site-1", "Traceback ...\nValueError: boom")
    again = JobStore(tmp_path / "ws")  # a restarted server reads it back
    errors = again.get_errors(job_id)
    assert [(e["site"], e["error"].splitlines()[-1]) for e in errors] == [
        ("site-1", "ValueError: boom")]
    assert "time_iso" in errors[0] and ERRORS in again.get_meta(job_id)
    forged = zip_job_folder(make_job_folder(tmp_path / "f", default_meta(errors=["x"])))
    assert ERRORS not in store.get_meta(store.submit(forged).job_id)
