"""hello-numpy-agent end to end: server + 2 sites, job cells and training scripts as processes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio
from rt_helpers import federation

from cellnet.defs import JobMetaKey, RunStatus

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-numpy-agent"
ENDED = [s for s in RunStatus if s.startswith("FINISHED:")]
TRAIN = "app_client/custom/train.py"


def job_copy(tmp: Path, **edits: str) -> Path:
    dest = tmp / "job"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, text in edits.items():
        (dest / rel).write_text(text)
    return dest


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def processes_under(root: Path) -> list[int]:
    """The live processes whose working folder is inside ``root`` (training scripts)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = (proc / "cwd").resolve(strict=True)
            except OSError:
                continue
            if cwd.is_relative_to(root.resolve()) and alive(int(proc.name)):
                pids.append(int(proc.name))
    return pids


async def wait_gone(pids, seconds: float = 15.0) -> None:
    with trio.fail_after(seconds):
        while any(alive(p) for p in pids):
            await trio.sleep(0.05)


async def test_hello_numpy_agent_exact_result(kits, tmp_path):
    async with federation(kits, tmp_path) as fed:
        sub = await fed.client.submit(job_copy(tmp_path))
        meta = await fed.client.wait_for_status(sub["job_id"], ENDED, timeout=45)
        assert meta[JobMetaKey.STATUS] == RunStatus.FINISHED_COMPLETED, \
            await fed.client.show_errors(sub["job_id"])
        results = await fed.client.get_results(sub["job_id"])
        assert results["weights"] == {"w": [3.0, 3.0, 3.0, 3.0]}  # 3 rounds of +1, averaged
        assert results["metrics"] == [{"site-1": {"mean": m}, "site-2": {"mean": m}}
                                      for m in (1.0, 2.0, 3.0)]
        assert await fed.client.show_errors(sub["job_id"]) == []
        await wait_gone(processes_under(tmp_path))  # the training scripts end with the job


FAILING = '''
import cellnet.client as flare

def train(params, rnd):
    if rnd == 1:
        raise ValueError(f"boom in round {rnd}")
    return {k: v + 1 for k, v in params.items()}

flare.init()
while flare.is_running():
    model = flare.receive()
    flare.send(train(model.params, model.current_round), num_steps=1)
'''


async def test_script_error_reaches_show_errors_with_traceback(kits, tmp_path):
    async with federation(kits, tmp_path) as fed:
        sub = await fed.client.submit(job_copy(tmp_path, **{TRAIN: FAILING}))
        meta = await fed.client.wait_for_status(sub["job_id"], ENDED, timeout=45)
        assert meta[JobMetaKey.STATUS] == RunStatus.FINISHED_EXECUTION_EXCEPTION
        errors = await fed.client.show_errors(sub["job_id"])
        by_site = {e["site"]: e["error"] for e in errors}
        for site in ("site-1", "site-2"):
            text = by_site[site]
            assert f"{site}.{sub['job_id']}.trainer" in text and "exit status 1" in text
            assert "Traceback (most recent call last):" in text
            assert 'in train\n    raise ValueError(f"boom in round {rnd}")' in text
            assert text.rstrip().endswith("ValueError: boom in round 1")
        assert "round 1: training failed" in by_site["server"]


SLOW = '''
import os, time
import cellnet.client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    with open(f"{flare.get_site_name()}.pid", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
'''


async def test_abort_job_stops_the_training_processes(kits, tmp_path):
    async with federation(kits, tmp_path) as fed:
        sub = await fed.client.submit(job_copy(tmp_path, **{TRAIN: SLOW}))
        job_id = sub["job_id"]
        files = [tmp_path / s / job_id / "app" / "custom" / f"{s}.pid" for s in fed.sites]
        with trio.fail_after(30):
            while not all(f.exists() and f.read_text() for f in files):
                await trio.sleep(0.05)
        pids = [int(f.read_text()) for f in files]
        assert all(alive(p) for p in pids)
        with trio.fail_after(15):
            assert await fed.client.abort(job_id) == RunStatus.FINISHED_ABORTED
        assert set(pids) <= set(processes_under(tmp_path))
        await wait_gone(pids)  # the scripts outlived their job cells by at most orphan_grace
