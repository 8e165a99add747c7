"""Job folder validation (every problem reported, with its place) and safe, deterministic zips."""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from pathlib import Path

import pytest
from fl_helpers import SITES, default_meta, make_job_folder

from cellnet.errors import JobValidationError
from cellnet.fl import Limits, load_job_archive, load_job_folder, unzip_job, zip_job_folder


def test_valid_folder_loads_with_reference_spellings(tmp_path):
    spec = load_job_folder(make_job_folder(tmp_path / "job"), SITES)
    assert spec.name == "hello"
    assert spec.min_sites == 2
    assert spec.required_sites == []
    assert spec.deploy_map == {"srv": ["server"], "cli": ["site-1", "site-2"]}
    assert spec.resource_spec == {"site-1": {"num_gpus": 1}}
    assert spec.meta["min_clients"] == 2 and spec.meta["mandatory_clients"] == []
    assert spec.apps == ("srv", "cli")
    assert spec.warnings == ()


def test_our_spellings_are_normalized_to_reference_keys(tmp_path):
    meta = default_meta(min_sites=1, required_sites=["site-2"])
    del meta["min_clients"]
    spec = load_job_folder(make_job_folder(tmp_path / "job", meta), SITES)
    assert (spec.min_sites, spec.required_sites) == (1, ["site-2"])
    assert "min_sites" not in spec.meta and spec.meta["mandatory_clients"] == ["site-2"]


def test_undeployed_app_folder_is_a_warning(tmp_path):
    root = make_job_folder(tmp_path / "job", apps=("srv", "cli", "spare"))
    spec = load_job_folder(root, SITES)
    assert spec.warnings == ("spare/: folder is not in deploy_map and will not be deployed",)


def test_all_sites_expands_for_counting(tmp_path):
    meta = default_meta(deploy_map={"app": ["@ALL"]}, min_clients=3, resource_spec={})
    spec = load_job_folder(make_job_folder(tmp_path / "job", meta, ("app",)), SITES)
    assert spec.min_sites == 3
    bad = default_meta(deploy_map={"app": ["@ALL"]}, min_clients=4, resource_spec={})
    with pytest.raises(JobValidationError, match="min_sites is 4 but deploy_map names only 3"):
        load_job_folder(make_job_folder(tmp_path / "job2", bad, ("app",)), SITES)


def _meta(**kw):
    return default_meta(**kw)


CASES = [
    ("unknown site", _meta(deploy_map={"srv": ["server"], "cli": ["site-1", "site-9"]}),
     ("srv", "cli"), ["meta.json: deploy_map['cli']: unknown site 'site-9' (known sites: "
                      "site-1, site-2, site-3)"]),
    ("invalid site name", _meta(deploy_map={"srv": ["server"], "cli": ["site-1", "site 2"]}),
     ("srv", "cli"), ["meta.json: deploy_map['cli']: site 'site 2' is not a valid site name "
                      "(FQCN part 'site 2': whitespace ' ' at index 4"]),
    ("app folder missing", None, ("srv",),
     ["cli/: app folder named in deploy_map is missing"]),
    ("min sites too big", _meta(min_clients=3), ("srv", "cli"),
     ["meta.json: min_sites is 3 but deploy_map names only 2 client site(s)"]),
    ("min sites not int", _meta(min_clients="2"), ("srv", "cli"),
     ["meta.json: min_sites must be an integer >= 1, got '2'"]),
    ("required not deployed", _meta(mandatory_clients=["site-3"]), ("srv", "cli"),
     ["meta.json: required site 'site-3' is not deployed by deploy_map"]),
    ("site in two apps",
     _meta(deploy_map={"srv": ["server", "site-1"], "cli": ["site-1", "site-2"]}),
     ("srv", "cli"), ["meta.json: deploy_map['cli']: site 'site-1' is also deployed by app 'srv'"]),
    ("site twice in one app", _meta(deploy_map={"srv": ["server"], "cli": ["site-1", "site-1"]},
                                    min_clients=1),
     ("srv", "cli"), ["meta.json: deploy_map['cli']: site 'site-1' is listed twice in this app"]),
    ("@ALL mixed", _meta(deploy_map={"srv": ["server"], "cli": ["@ALL"]}), ("srv", "cli"),
     ["meta.json: deploy_map: app 'cli' uses '@ALL', so no other app can be deployed"]),
    ("empty deploy map", _meta(deploy_map={}), ("srv", "cli"),
     ["meta.json: 'deploy_map' must be a non-empty object of app -> sites"]),
    ("aliases differ", _meta(min_sites=1), ("srv", "cli"),
     ["meta.json: 'min_sites' and 'min_clients' are both given and differ"]),
    ("bad resource amount", _meta(resource_spec={"site-1": {"num_gpus": -1}}), ("srv", "cli"),
     ["meta.json: resource_spec['site-1']['num_gpus']: amount must be a number >= 0, got -1"]),
    ("resource for undeployed site", _meta(resource_spec={"site-3": {"mem_gb": 8}}),
     ("srv", "cli"), ["meta.json: resource_spec['site-3']: site is not deployed by deploy_map"]),
    ("bad timeout", _meta(schedule_timeout=0), ("srv", "cli"),
     ["meta.json: schedule_timeout must be a number of seconds > 0"]),
    ("bad name", _meta(name=""), ("srv", "cli"), ["meta.json: 'name' must be a non-empty string"]),
]  # fmt: skip


@pytest.mark.parametrize(("label", "meta", "apps", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_problem_is_reported_precisely(tmp_path, label, meta, apps, expected):
    root = make_job_folder(tmp_path / "job", meta, apps)
    with pytest.raises(JobValidationError) as info:
        load_job_folder(root, SITES)
    problems = info.value.problems
    assert len(problems) == len(expected), problems
    for got, want in zip(problems, expected, strict=True):
        assert got.startswith(want), (got, want)


def test_bad_json_reports_line_and_column(tmp_path):
    root = make_job_folder(tmp_path / "job")
    (root / "meta.json").write_text('{\n  "name": "x",\n  "deploy_map": ,\n}')
    (root / "cli" / "config" / "config_fed.json").write_text("[1, 2")
    with pytest.raises(JobValidationError) as info:
        load_job_folder(root, SITES)
    assert info.value.problems == [
        "meta.json: invalid JSON at line 3 column 17: Expecting value",
    ]
    assert "line 3 column 17" in str(info.value)


def test_bad_app_config_json_and_missing_config(tmp_path):
    root = make_job_folder(tmp_path / "job")
    (root / "cli" / "config" / "config_fed.json").write_text("[1, 2")
    (root / "srv" / "config" / "config_fed.json").unlink()
    with pytest.raises(JobValidationError) as info:
        load_job_folder(root, SITES)
    assert info.value.problems == [
        "srv/config/: app has no JSON config file",
        "cli/config/config_fed.json: invalid JSON at line 1 column 6: Expecting ',' delimiter",
    ]


def test_all_problems_are_collected_together(tmp_path):
    meta = _meta(min_clients=5, mandatory_clients=["site-3"],
                 deploy_map={"srv": ["server"], "cli": ["site-1", "nowhere"]})  # fmt: skip
    root = make_job_folder(tmp_path / "job", meta, ("srv",))
    with pytest.raises(JobValidationError) as info:
        load_job_folder(root, SITES)
    assert len(info.value.problems) == 4
    assert "4 problem(s)" in str(info.value)


def test_meta_missing_or_not_an_object(tmp_path):
    root = make_job_folder(tmp_path / "job")
    (root / "meta.json").write_text("[]")
    with pytest.raises(JobValidationError, match="must be a JSON object"):
        load_job_folder(root)
    (root / "meta.json").unlink()
    with pytest.raises(JobValidationError, match=r"meta\.json: missing"):
        load_job_folder(root)
    with pytest.raises(JobValidationError, match="is not a folder"):
        load_job_folder(tmp_path / "nope")


def test_symlinks_escaping_or_to_folders_are_refused(tmp_path):
    root = make_job_folder(tmp_path / "job")
    (tmp_path / "secret.txt").write_text("s")
    (root / "cli" / "custom" / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (root / "cli" / "custom" / "loop").symlink_to(root / "cli")
    with pytest.raises(JobValidationError) as info:
        load_job_folder(root, SITES)
    assert info.value.problems == [
        "cli/custom/loop: symbolic link to a directory is not supported",
        "cli/custom/leak.txt: symbolic link points outside the job folder",
    ]


def test_symlink_to_a_file_inside_is_followed(tmp_path):
    root = make_job_folder(tmp_path / "job")
    (root / "cli" / "custom" / "alias.py").symlink_to(root / "cli" / "custom" / "train.py")
    with zipfile.ZipFile(io.BytesIO(zip_job_folder(root))) as zf:
        names = {i.filename: zf.read(i) for i in zf.infolist()}
    assert names["cli/custom/alias.py"] == names["cli/custom/train.py"]


def test_non_utf8_names_are_refused(tmp_path):
    root = make_job_folder(tmp_path / "job")
    try:
        (root / os.fsdecode(b"cli/custom/bad\xff.py")).write_text("x")
    except (OSError, UnicodeEncodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    with pytest.raises(JobValidationError) as info:
        load_job_folder(root, SITES)
    assert info.value.problems == ["b'cli/custom/bad\\xff.py': name is not valid UTF-8"]


def test_oversize_and_too_many_entries(tmp_path):
    root = make_job_folder(tmp_path / "job")
    (root / "cli" / "custom" / "big.bin").write_bytes(b"x" * 5000)
    with pytest.raises(JobValidationError, match="larger than the limit of 4000 bytes"):
        load_job_folder(root, SITES, Limits(max_total_bytes=4000))
    with pytest.raises(JobValidationError, match="more than 5 entries"):
        load_job_folder(root, SITES, Limits(max_entries=5))


# --- zip / unzip ---------------------------------------------------------------------------


def test_zip_is_deterministic_and_round_trips(tmp_path):
    root = make_job_folder(tmp_path / "job")
    (root / "cli" / "empty").mkdir()
    first = zip_job_folder(root)
    os.utime(root / "meta.json", (1_000_000, 1_000_000))
    assert zip_job_folder(root) == first
    out = unzip_job(first, tmp_path / "out")
    assert (out / "cli" / "custom" / "train.py").read_text() == "APP = 'cli'\n"
    assert (out / "cli" / "empty").is_dir()
    assert zip_job_folder(out) == first
    spec, canonical = load_job_archive(first, SITES)
    assert spec.name == "hello" and canonical == first


def _zip(entries, *, symlink=None):
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # duplicate names are built on purpose
        for name, data in entries:
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../evil.py", "entry '../evil.py' escapes the job folder ('..')"),
        ("a/../../evil.py", "entry 'a/../../evil.py' escapes the job folder ('..')"),
        ("/etc/cron.d/x", "entry '/etc/cron.d/x' is an absolute path"),
        ("C:/x.py", "entry 'C:/x.py' is an absolute path"),
        ("a\\b.py", "entry 'a\\\\b.py' contains a backslash"),
        ("a//b.py", "entry 'a//b.py' has an empty or '.' path component"),
    ],
)
def test_unzip_refuses_zip_slip(tmp_path, name, problem):
    data = _zip([("meta.json", "{}"), (name, "boom")])
    with pytest.raises(JobValidationError) as info:
        unzip_job(data, tmp_path / "out")
    assert info.value.problems == [problem]
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_unzip_refuses_symlinks_duplicates_and_garbage(tmp_path):
    data = _zip([("a.txt", "1"), ("a.txt", "2")], symlink="link")
    with pytest.raises(JobValidationError) as info:
        unzip_job(data, tmp_path / "out")
    assert info.value.problems == [
        "entry 'a.txt' appears more than once",
        "entry 'link' is a symbolic link",
    ]
    with pytest.raises(JobValidationError, match="not a valid zip"):
        unzip_job(b"PK\x03\x04 not really", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_unzip_limits_against_bombs(tmp_path):
    bomb = _zip([("zeros.bin", b"\0" * 1_000_000)])
    assert len(bomb) < 5_000
    with pytest.raises(JobValidationError, match="inflate to 1000000 bytes; the limit is 100000"):
        unzip_job(bomb, tmp_path / "out", Limits(max_total_bytes=100_000))
    many = _zip([(f"f{i}", "") for i in range(20)])
    with pytest.raises(JobValidationError, match="20 entries; the limit is 10"):
        unzip_job(many, tmp_path / "out", Limits(max_entries=10))
    assert list(tmp_path.iterdir()) == []


def test_unzip_refuses_existing_destination(tmp_path):
    data = zip_job_folder(make_job_folder(tmp_path / "job"))
    (tmp_path / "out").mkdir()
    with pytest.raises(JobValidationError, match="already exists"):
        unzip_job(data, tmp_path / "out")


def test_archive_with_non_utf8_name_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("caf\u00e9.txt"), "x")
    raw = buf.getvalue().replace(b"\x00\x08", b"\x00\x00", 2)  # clear the UTF-8 flag bits
    with pytest.raises(JobValidationError, match="not UTF-8"):
        load_job_archive(raw)


def test_archive_validation_uses_the_same_rules(tmp_path):
    root = make_job_folder(tmp_path / "job", _meta(min_clients=3))
    data = zip_job_folder(root)
    with pytest.raises(JobValidationError) as info:
        load_job_archive(data, SITES)
    assert info.value.problems == [
        "meta.json: min_sites is 3 but deploy_map names only 2 client site(s)"
    ]
    assert json.loads(zipfile.ZipFile(io.BytesIO(data)).read("meta.json"))["min_clients"] == 3
    assert isinstance(Path(root), Path)
