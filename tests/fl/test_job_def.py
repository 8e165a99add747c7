"""The reference Job: deployment copy, per-app zips, @ALL expansion."""

from __future__ import annotations

import io
import zipfile

import pytest
from fl_helpers import make_job_folder

from cellnet.defs import JobMetaKey, RunStatus
from cellnet.errors import JobError
from cellnet.fl import Job, load_job_folder, zip_job_folder


@pytest.fixture
def job(tmp_path):
    root = make_job_folder(tmp_path / "job")
    spec = load_job_folder(root)
    content = zip_job_folder(root)
    meta = {**spec.meta, JobMetaKey.JOB_ID: "j1", JobMetaKey.STATUS: RunStatus.SUBMITTED}
    return Job.from_meta(meta, lambda: content)


def test_reference_constructor_and_deployment_copy(job):
    assert (job.job_id, job.min_sites, job.required_sites) == ("j1", 2, [])
    assert job.status is RunStatus.SUBMITTED
    dep = job.get_deployment()
    assert dep == {"srv": ["server"], "cli": ["site-1", "site-2"]}
    dep["cli"].append("site-9")
    assert job.get_deployment()["cli"] == ["site-1", "site-2"]
    assert job.client_sites() == {"site-1", "site-2"}
    assert job.needs_server() and job.app_for_site("site-2") == "cli"
    assert job.app_for_site("site-3") is None


def test_get_application_is_the_app_folder_zip(job):
    data = job.get_application("cli", fl_ctx=None)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
        assert names == ["config/", "config/config_fed.json", "custom/", "custom/train.py"]
        assert zf.read("custom/train.py") == b"APP = 'cli'\n"
    assert job.get_application("cli") == data  # deterministic


def test_get_application_errors(job):
    with pytest.raises(JobError, match="has no app 'nope'"):
        job.get_application("nope")
    bare = Job("j2", {}, {"a": ["site-1"]}, {})
    with pytest.raises(JobError, match="no content attached"):
        bare.get_application("a")
    assert bare.status is None and bare.submit_time == 0.0 and bare.schedule_timeout == 3600.0


def test_all_sites_expansion():
    j = Job("j3", {}, {"app": ["@ALL"]}, {}, min_sites=2)
    assert j.deploys_to_all() and j.needs_server()
    assert j.client_sites(["site-1", "site-2"]) == {"site-1", "site-2"}
    assert j.app_for_site("site-7") == "app"


def test_package_exports_resolve():
    import cellnet.fl as fl

    assert all(getattr(fl, name) is not None for name in fl.__all__)
    assert fl.ALL_SITES == "@ALL" and fl.DEFAULT_SCHEDULE_TIMEOUT == 3600.0
