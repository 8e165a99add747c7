"""`cellnet simulate`: a job on a throw-away local federation, end to end in real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _simulate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cellnet.cli", "simulate", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_hello_echo_example_completes_with_exact_results(tmp_path):
    ws = tmp_path / "ws"
    proc = _simulate(str(REPO / "examples" / "hello-echo"), "-n", "2", "--workspace", str(ws),
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for status in ("SUBMITTED", "DISPATCHED", "RUNNING", "FINISHED:COMPLETED"):
        assert status in out
    assert out.count("[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]") == 2  # each site doubled x
    assert f"logs: {ws / 'log.txt'}" in out
    assert (ws / "log.txt").stat().st_size > 0 and (ws / "audit.log").is_file()


def test_example_by_name_from_the_checkout(tmp_path):
    proc = _simulate("--example", "hello-echo", "--workspace", str(tmp_path / "w"), cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_job_naming_a_missing_site_fails_clearly(tmp_path):
    proc = _simulate(str(REPO / "examples" / "hello-echo"), "-n", "1",
                     "--workspace", str(tmp_path / "w"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "site-2" in proc.stderr and "JobValidationError" in proc.stderr


def test_bad_arguments_exit_2(tmp_path):
    assert _simulate(cwd=tmp_path).returncode == 2
    assert _simulate(str(tmp_path), cwd=tmp_path).returncode == 2  # no meta.json
    proc = _simulate("--example", "nope", cwd=REPO)
    assert proc.returncode == 2 and "no example 'nope'" in proc.stderr
