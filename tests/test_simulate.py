"""`cellnet simulate`: a job on a throw-away local federation, end to end in real processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

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


EXACT = "weights =\n[[ 4.  5.  6.]\n [ 7.  8.  9.]\n [10. 11. 12.]]"


def _final_model(out: str) -> Path:
    line = next(x for x in out.splitlines() if x.startswith("cellnet simulate: final model ("))
    return Path(line.split("(", 1)[1].rsplit(")", 1)[0])


def test_hello_numpy_example_prints_the_exact_final_model(tmp_path):
    proc = _simulate("--example", "hello-numpy", "--workspace", str(tmp_path / "w"), cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert EXACT in out
    assert "progress [########################] 3/3 rounds  sites answered 2/2" in out
    assert out.count("result(s) in") == 3  # one line per round
    path = _final_model(out)
    assert path.is_relative_to(tmp_path / "w")
    with np.load(path) as z:
        np.testing.assert_array_equal(z["weights"], np.arange(4, 13, dtype=np.float32)
                                      .reshape(3, 3))
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "final.npz", "round-0.npz", "round-1.npz", "round-2.npz"]


def test_hello_numpy_is_exact_with_three_sites(tmp_path):
    proc = _simulate(str(REPO / "examples" / "hello-numpy"), "-n", "3",
                     "--workspace", str(tmp_path / "w"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert EXACT in proc.stdout and "sites answered 3/3" in proc.stdout


FAILING_TRAINER = '''
from cellnet.defs import FLContextKey
from np_trainer import NPTrainer


class Flaky(NPTrainer):
    def execute(self, task_name, dxo, fl_ctx, abort_signal):
        if fl_ctx.get_prop(FLContextKey.CLIENT_NAME) == "site-2":
            raise RuntimeError("out of memory on site-2")
        return super().execute(task_name, dxo, fl_ctx, abort_signal)
'''


def test_a_round_with_too_few_results_ends_the_job_with_a_readable_reason(tmp_path):
    job = tmp_path / "job"
    shutil.copytree(REPO / "examples" / "hello-numpy", job,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (job / "app" / "custom" / "flaky.py").write_text(FAILING_TRAINER)
    cfg = job / "app" / "config" / "config_fed_client.json"
    cfg.write_text(cfg.read_text().replace("np_trainer.NPTrainer", "flaky.Flaky"))
    proc = _simulate(str(job), "--workspace", str(tmp_path / "w"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FINISHED:EXECUTION_EXCEPTION" in proc.stdout
    assert "round 0: 1 of the 2 results it needs were accepted" in proc.stdout
    status = next(x for x in proc.stdout.splitlines() if "FINISHED:EXECUTION_EXCEPTION (" in x)
    assert status.endswith("JobError: round 0: 1 of the 2 results it needs were accepted "
                           "(train timeout 60 s); site-2: EXECUTION_EXCEPTION (RuntimeError: "
                           "out of memory on site-2))")
    assert "site-2: EXECUTION_EXCEPTION (RuntimeError: out of memory on site-2)" in proc.stdout


def test_progress_line_shows_rounds_sites_and_metrics():
    from cellnet.simulate import _Progress

    line = _Progress.line({"num_rounds": 4, "rounds_done": 1, "sites_answered": 1,
                           "sites_total": 3, "metrics": {"acc": 0.91234, "loss": 0.5}})
    assert line == ("[######------------------] 1/4 rounds  sites answered 1/3"
                    "  acc=0.9123 loss=0.5")
