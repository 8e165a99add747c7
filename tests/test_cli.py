"""The ``cellnet`` console script: subcommands dispatch and report clearly."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from cellnet import cli

PROJECT = """\
name = "cli-demo"

[server]
host = "127.0.0.1"
fl_port = 8002
admin_port = 8003

[[sites]]
name = "site-1"
org = "org-a"
"""


def _cellnet(*args: str, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cellnet.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )


def test_info_reports_native_build(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "native ABI" in out and "crc32c implementation" in out


def test_unknown_command_fails_with_usage():
    proc = _cellnet("frobnicate")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_provision_creates_kits(tmp_path):
    project = tmp_path / "project.toml"
    project.write_text(PROJECT)
    assert cli.main(["provision", str(project), "-o", str(tmp_path / "kits")]) == 0
    key = tmp_path / "kits" / "site-1" / "key.pem"
    assert key.is_file() and (os.stat(key).st_mode & 0o777) == 0o600


def test_provision_bad_project_is_a_clear_error(tmp_path, capsys):
    project = tmp_path / "project.toml"
    project.write_text(PROJECT.replace('name = "site-1"', 'name = "site 1"'))
    assert cli.main(["provision", str(project), "-o", str(tmp_path / "kits")]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "kits" / "site 1").exists()


def test_bench_outside_a_checkout_says_where_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_find_bench", lambda: None)
    assert cli.main(["bench", "--quick"]) == 2
    assert "source checkout" in capsys.readouterr().err


def test_bench_help_passes_through():
    proc = _cellnet("bench", "--help")
    assert proc.returncode == 0 and "--quick" in proc.stdout


# --- cellnet job / the job runtime options of cellnet run ------------------------------

def _admin_kits(tmp_path: pathlib.Path) -> pathlib.Path:
    from cellnet.security.local import provision_local

    return provision_local(tmp_path / "p", "cli-jobs", ["site-1"],
                           admins=[("admin@org-a.com", "org-a", "lead")])


def test_job_is_listed_and_passes_through(capsys):
    assert "job" in cli.build_parser().format_help()
    try:
        cli.main(["job", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for action in ("submit", "list", "status", "abort", "errors"):
        assert action in out


def test_job_refuses_a_non_admin_kit_and_reports_an_unreachable_server(tmp_path, capsys):
    from cellnet.admin import job_main

    kits = _admin_kits(tmp_path)
    assert job_main(["list", str(kits / "site-1")]) == 2
    assert "not of an admin" in capsys.readouterr().err
    assert job_main(["list", str(tmp_path / "nope")]) == 2
    assert "not a startup kit" in capsys.readouterr().err
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert job_main(["status", str(kits / "admin@org-a.com"), "J1", "--port", str(port),
                     "--timeout", "2"]) == 3
    assert "cannot reach" in capsys.readouterr().err
    assert job_main(["list", str(kits / "admin@org-a.com"), "--timeout", "0"]) == 2


def test_admin_cell_name_is_a_valid_distinct_cell_name():
    from cellnet.fqcn import validate
    from cellnet.security.names import admin_cell_name

    a, b = admin_cell_name("a.b@org.com"), admin_cell_name("a_b@org.com")
    assert validate(a) == a and "--" not in a and a.startswith("admin-a_b_org_com-")
    assert a != b and admin_cell_name("a.b@org.com") == a
    try:
        admin_cell_name("not-an-admin")
    except ValueError as exc:
        assert "admin identity" in str(exc)
    else:
        raise AssertionError("a bad admin name was accepted")


def test_run_resources_come_from_the_flag_the_kit_or_the_default(tmp_path):
    from cellnet.run import DEFAULT_RESOURCES, _resources, build_parser
    from cellnet.security import StartupKit

    kit = StartupKit.load(_admin_kits(tmp_path) / "site-1")
    parse = build_parser().parse_args
    assert _resources(parse([str(kit.path)]), kit) == DEFAULT_RESOURCES
    (kit.path / "resources.json").write_text('{"gpus": 2, "slots": 1}')
    assert _resources(parse([str(kit.path)]), kit) == {"gpus": 2.0, "slots": 1.0}
    flag = parse([str(kit.path), "--resources", '{"slots": 3}'])
    assert _resources(flag, kit) == {"slots": 3.0}
    for bad in ('{"slots": -1}', '[1]', '{"slots": true}', "{nope"):
        try:
            _resources(parse([str(kit.path), "--resources", bad]), kit)
        except ValueError as exc:
            assert "--resources" in str(exc)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_run_bad_resources_exit_2(tmp_path, capsys):
    from cellnet.run import run_main

    kits = _admin_kits(tmp_path)
    assert run_main([str(kits / "site-1"), "--resources", "[]",
                     "--workspace", str(tmp_path / "ws")]) == 2
    assert "--resources" in capsys.readouterr().err


def test_an_admin_cert_proves_only_its_own_admin_cell_names(tmp_path):
    import pytest

    from cellnet.errors import IdentityMismatchError
    from cellnet.security import StartupKit, verify_peer
    from cellnet.security.names import admin_cell_name

    kit = StartupKit.load(_admin_kits(tmp_path) / "admin@org-a.com")
    cert = kit.cert_path.read_bytes()
    mine = admin_cell_name("admin@org-a.com")
    for announced in ("admin@org-a.com", mine, f"{mine}--ab12"):
        assert verify_peer(cert, announced, ca=kit).role == "lead"
    for announced in (admin_cell_name("other@org-a.com"), f"{mine}.J1", "site-1", "server"):
        with pytest.raises(IdentityMismatchError):
            verify_peer(cert, announced, ca=kit)


def test_follow_job_reports_each_new_status_once_and_returns_the_final_meta():
    import trio

    from cellnet.admin.job_cli import follow_job

    metas = [
        {"status": "SUBMITTED", "status_history": [{"status": "SUBMITTED"}]},
        {"status": "SUBMITTED", "status_history": [{"status": "SUBMITTED"}]},
        {"status": "FINISHED:COMPLETED", "status_history": [
            {"status": "SUBMITTED"}, {"status": "RUNNING"}, {"status": "FINISHED:COMPLETED"}]},
    ]

    class Client:
        async def get_meta(self, job_id):
            assert job_id == "j1"
            return metas.pop(0)

    calls = []

    async def on_poll(new, ended):
        calls.append(([h["status"] for h in new], ended))

    meta = trio.run(follow_job, Client(), "j1", 10.0, on_poll, 0.0)
    assert meta["status"] == "FINISHED:COMPLETED"
    assert calls == [(["SUBMITTED"], False), ([], False),
                     (["RUNNING", "FINISHED:COMPLETED"], True)]
