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
