"""ClientAPIExecutor in a job cell of this process, with real training-script processes."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import trio

from cellnet.client import CallStateError, FlareAgent
from cellnet.defs import FLContextKey
from cellnet.errors import LinkError
from cellnet.fl.dxo import DXO, DataKind
from cellnet.fl.runtime import FLContext, Signal
from cellnet.fl.runtime.agent_executor import ClientAPIExecutor, TrainingProcessError, stderr_tail
from cellnet.fl.runtime.agent_launch import resolve_command
from cellnet.fl.runtime.session import Session
from cellnet.node import CellNode

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"

ECHO = '''
import sys
from cellnet.client import FlareAgent, TaskResult
agent = FlareAgent()
agent.start()
while True:
    task = agent.get_task()
    mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
    if mode == "sleep":
        import time; time.sleep(120)
    rc = "EXECUTION_EXCEPTION" if mode == "refuse" else "OK"
    agent.submit_result(TaskResult({"seen": task.task_id}, {k: v * 2 for k, v in task.data.items()},
                                   rc))
'''


@contextlib.asynccontextmanager
async def job_cell(kits: Path, tmp: Path, script: str = ECHO):
    async with CellNode(kits / "server", listen=(HOST, 0)) as server, \
            CellNode(kits / "site-1", "site-1.J", uplink="server",
                     connect=server.address) as node:
        await node.wait_connected(10)
        app = tmp / "J" / "app"
        (app / "custom").mkdir(parents=True)
        (app / "custom" / "train.py").write_text(script)
        session = Session("site-1", "tok", "ssid", "agents")
        yield SimpleNamespace(cell=node.cell, node=node, session=session, job_id="J",
                              app_dir=app)


def executor(engine, **kwargs) -> ClientAPIExecutor:
    ex = ClientAPIExecutor(**{"agent_id": "trainer", "stop_grace": 1.0, **kwargs})
    ex.engine = engine
    return ex


async def execute(ex: ClientAPIExecutor, task_id: str, x: float = 1.0) -> DXO:
    ctx = FLContext()
    ctx.set_prop(FLContextKey.TASK_ID, task_id)
    dxo = DXO(DataKind.WEIGHTS, {"w": np.full(2, x, np.float32)})
    return await ex.execute("train", dxo, ctx, Signal())


async def test_tasks_run_in_one_process_then_it_ends_with_the_job_cell(kits, tmp_path):
    async with job_cell(kits, tmp_path) as engine:
        ex = executor(engine)
        assert ex.agent_fqcn(engine) == "site-1.J.trainer"
        with trio.fail_after(20):
            one = await execute(ex, "t1", 1.0)
            two = await execute(ex, "t2", 5.0)
        np.testing.assert_array_equal(two.data["w"], np.full(2, 10.0, np.float32))
        assert (one.get_meta("seen"), two.get_meta("seen")) == ("t1", "t2")
        assert ex.launches == 1
        child = ex.child
    assert child.returncode is not None  # the node's exit ended the script (it saw AgentClosed)


async def test_abort_and_timeout_stop_the_process(kits, tmp_path):
    async with job_cell(kits, tmp_path) as engine:
        ex = executor(engine, command="python train.py sleep", task_timeout=0.5)
        with trio.fail_after(20), pytest.raises(TrainingProcessError,
                                                match=r"no result within task_timeout=0\.5"):
            await execute(ex, "t1")
        assert ex.child.returncode is not None
        ex.task_timeout = None
        with trio.fail_after(20):
            with trio.move_on_after(1.5) as scope:  # the job cell aborts the task
                await execute(ex, "t2")
            assert scope.cancelled_caught
        assert ex.launches == 2 and ex.child.returncode is not None


async def test_script_failures_come_back_with_the_reason(kits, tmp_path):
    crash = "import sys\nprint('loading', file=sys.stderr)\nraise ImportError('no module foo')\n"
    async with job_cell(kits, tmp_path, crash) as engine:
        ex = executor(engine)
        with trio.fail_after(20), pytest.raises(TrainingProcessError) as info:
            await execute(ex, "t1")
        text = str(info.value)
        assert "site-1.J.trainer" in text and "exit status 1" in text
        assert "Traceback (most recent call last)" in text and "loading" not in text
        assert text.endswith("ImportError: no module foo")
        (engine.app_dir / "custom" / "train.py").write_text(ECHO)
        ex.command = ["python", "train.py", "refuse"]
        with trio.fail_after(20), pytest.raises(TrainingProcessError,
                                                match="answered the task with EXECUTION_EXC"):
            await execute(ex, "t2")
        assert ex.child.returncode is not None


def test_bad_arguments_and_helpers(tmp_path):
    for kwargs in ({"command": ""}, {"agent_id": "a.b"}, {"task_timeout": 0},
                   {"stop_grace": -1}, {"command": 3}):
        with pytest.raises(ValueError):
            ClientAPIExecutor(**kwargs)
    log = tmp_path / "err.log"
    log.write_text("noise\nTraceback (most recent call last):\n  x\nValueError: a\n"
                   "more\nTraceback (most recent call last):\n  y\nKeyError: b\n")
    assert stderr_tail(log) == "Traceback (most recent call last):\n  y\nKeyError: b"
    assert stderr_tail(log, limit=12) == "KeyError: b"
    assert "no standard error" in stderr_tail(tmp_path / "missing")
    assert resolve_command(["python3", "t.py"])[1:] == ["t.py"]
    assert resolve_command(["./run.sh"]) == ["./run.sh"]
    with pytest.raises(ValueError):
        resolve_command([])


def test_own_thread_agent_start_fails_clearly_without_its_job_cell(kits):
    env = {"CELLNET_CHILD_FQCN": "site-1.J.trainer", "CELLNET_PARENT_HOST": HOST,
           "CELLNET_PARENT_PORT": "1", "CELLNET_KIT": str(kits / "site-1")}
    agent = FlareAgent(env=env, connect_timeout=0.3)
    assert (agent.site_name, agent.job_id, agent.agent_id) == ("site-1", "J", "trainer")
    with pytest.raises(LinkError, match="unreachable"):
        agent.start()
    with pytest.raises(CallStateError):
        agent.get_task(0)
    agent.stop()
