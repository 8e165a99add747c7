"""Sessions, FLContext, the cmi messenger and the task API, on in-process cells (no processes)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pytest
import trio

from cellnet.cell import Cell, connect_in_process
from cellnet.defs import CMIHeader, FLContextKey, ReservedKey, ReturnCode
from cellnet.errors import AuthError
from cellnet.fl import DXO, DataKind
from cellnet.fl.runtime import (
    Controller,
    Executor,
    ExecutorRunner,
    FLContext,
    JobCellMessenger,
    SessionCheck,
    SessionTable,
    Task,
    peer_context_from_headers,
)
from cellnet.fl.runtime.session import cmi_headers

JOB = "J1"


def test_session_table_tokens_ssid_and_verdicts():
    table = SessionTable("proj", known_clients=["site-1", "site-2"])
    s1 = table.login("site-1")
    assert s1.ssid == table.ssid and s1.project == "proj" and s1.token
    with pytest.raises(AuthError, match="not part of project"):
        table.login("intruder")
    assert table.check(cmi_headers(s1, None)) is None
    fresh = table.login("site-1")  # the old token is now stale
    assert table.check(cmi_headers(s1, None)).code == "invalid_session"
    assert table.check(cmi_headers(fresh, None)) is None
    restarted = SessionTable("proj", ssid="other")
    restarted.login("site-1")
    assert restarted.check(cmi_headers(fresh, None)).code == "invalid_session"
    unknown = cmi_headers(fresh, None) | {CMIHeader.HEADER_CLIENT_NAME.value: "site-9"}
    assert table.check(unknown).code == "authentication_error"
    other_project = cmi_headers(fresh, None) | {CMIHeader.HEADER_PROJECT_NAME.value: "x"}
    assert table.check(other_project).code == "authentication_error"
    with pytest.raises(AuthError, match="not logged in"):
        table.checker(["site-2"])


def test_context_never_sends_non_serializable_or_private_props():
    ctx = FLContext()
    ctx.set_prop(FLContextKey.CURRENT_JOB_ID, JOB, private=False)
    ctx.set_prop(ReservedKey.ENGINE, object(), private=False)  # forced private
    ctx.set_prop(ReservedKey.RUNNER, "runner", private=False)
    ctx.set_prop("secret", 1)  # private by default
    ctx.set_prop("lock", trio.Lock(), private=False)  # public but not serialisable
    assert ctx.peer_props() == {FLContextKey.CURRENT_JOB_ID: JOB}
    peer = peer_context_from_headers({CMIHeader.HEADER_KEY_PEER_PROPS.value: ctx.peer_props()})
    assert peer.get_job_id() == JOB and peer.get_engine() is None
    assert peer_context_from_headers({}) is None
    with pytest.raises(TypeError):
        ctx.set_prop("", 1)


class Doubler(Executor):
    def execute(self, task_name, dxo, fl_ctx, abort_signal):
        if task_name == "boom":
            raise ValueError("executor broke")
        peer = fl_ctx.get_peer_context()
        return dxo.replace(data={"x": dxo.data["x"] * 2},
                           meta={"peer": peer.get_prop("tag") if peer else None})


class Sleeper(Executor):
    async def execute(self, task_name, dxo, fl_ctx, abort_signal):
        await trio.sleep_forever()


@dataclass
class Engine:
    cell: Cell
    session: object
    peer_check: SessionCheck | None
    job_id: str = JOB
    clients: tuple = ("site-1", "site-2")


class Flow(Controller):
    async def control_flow(self, fl_ctx):  # pragma: no cover - driven directly below
        return None


@contextlib.asynccontextmanager
async def job_cells(stale_site: str | None = None):
    """server -> site-N -> site-N.J1 in memory, with sessions and executor runners."""
    table = SessionTable("proj")
    sessions = {s: table.login(s) for s in ("site-1", "site-2")}
    async with contextlib.AsyncExitStack() as stack:
        server_job = await stack.enter_async_context(Cell(f"server.{JOB}", parent="server"))
        server = await stack.enter_async_context(Cell("server"))
        await connect_in_process(server, server_job)
        runners = {}
        for name, session in sessions.items():
            site = await stack.enter_async_context(Cell(name, parent="server"))
            job = await stack.enter_async_context(Cell(f"{name}.{JOB}", parent=name))
            await connect_in_process(server, site)
            await connect_in_process(site, job)
            ssid = "stale" if name == stale_site else table.ssid
            check = SessionCheck("proj", ssid, {"server": None}, JOB)
            runner = ExecutorRunner(Engine(job, session, check), JOB,
                                    {"double": Doubler(), "boom": Doubler(), "sleep": Sleeper()})
            runner.register()
            runners[name] = runner
        flow = Flow()
        flow.engine = Engine(server_job, table.server_session(), table.checker(None, JOB))
        yield flow, runners


def _task(name, timeout=5.0):
    return Task(name, DXO(DataKind.WEIGHTS, {"x": np.arange(4, dtype=np.float32)}),
                timeout=timeout)


async def test_broadcast_results_return_codes_and_peer_context():
    async with job_cells() as (flow, runners):
        ctx = FLContext()
        ctx.set_prop("tag", "from-server", private=False)
        results = await flow.broadcast_and_wait(_task("double"), min_responses=2, fl_ctx=ctx)
        for site in ("site-1", "site-2"):
            r = results[site]
            assert r.ok and list(r.dxo.data["x"]) == [0, 2, 4, 6]
            assert r.dxo.get_meta("peer") == "from-server"
        assert (await flow.send_and_wait(_task("nope"), "site-1")).rc == ReturnCode.TASK_UNKNOWN
        boom = await flow.send_and_wait(_task("boom"), "site-2")
        assert boom.rc == ReturnCode.EXECUTION_EXCEPTION and "executor broke" in boom.error
        relay = await flow.relay_and_wait(_task("double"))
        assert [list(r.dxo.data["x"]) for r in relay] == [[0, 2, 4, 6], [0, 4, 8, 12]]
        with pytest.raises(ValueError, match="not in this job"):
            await flow.send_and_wait(_task("double"), "site-9")
        with pytest.raises(ValueError, match="min_responses"):
            await flow.broadcast_and_wait(_task("double"), min_responses=3)
        assert await flow.end_run() == {"site-1": "OK", "site-2": "OK"}
        assert all(r.ended.is_set() for r in runners.values())


async def test_timeout_and_abort_task():
    async with job_cells() as (flow, _runners):
        with trio.fail_after(5):
            timed = await flow.broadcast_and_wait(_task("sleep", timeout=0.2))
        assert {r.rc for r in timed.values()} == {ReturnCode.COMMUNICATION_ERROR}
        task = _task("sleep")
        async with trio.open_nursery() as nursery:
            got = {}

            async def wait():
                got.update(await flow.broadcast_and_wait(task))

            nursery.start_soon(wait)
            await trio.sleep(0.1)
            await flow.abort_task(task)
        assert {r.rc for r in got.values()} == {ReturnCode.TASK_ABORTED}


async def test_stale_ssid_is_invalid_session_and_forged_reply_unauthenticated():
    async with job_cells(stale_site="site-2") as (flow, runners):
        results = await flow.broadcast_and_wait(_task("double"))
        assert results["site-1"].ok
        assert results["site-2"].rc == "invalid_session"
        assert runners["site-2"].handled == []  # refused before any executor ran
        # a reply whose token is not the live one is refused on the server side
        flow.engine.peer_check.tokens["site-1"] = "other-token"
        assert (await flow.send_and_wait(_task("double"), "site-1")).rc == "invalid_session"
        flow.engine.peer_check.tokens.pop("site-1")
        assert (await flow.send_and_wait(_task("double"), "site-1")).rc == "unauthenticated"


async def test_messenger_headers_and_fire_and_forget():
    async with job_cells() as (flow, runners):
        m = JobCellMessenger(flow.engine, JOB)
        assert m.job_cell("site-1") == "site-1.J1"
        msg = m.new_cmi_message(None, {"x": 1}, b"p")
        assert msg.headers[CMIHeader.HEADER_JOB_ID] == JOB
        assert msg.headers[CMIHeader.HEADER_CLIENT_NAME] == "server"
        assert await m.send_to_cell(["site-1"], "fl_task", "__end_run__", None, 0, None) == {}
        with trio.fail_after(5):
            await runners["site-1"].ended.wait()
        with pytest.raises(ValueError, match="timeout"):
            await m.send_to_cell(["site-1"], "c", "t", None, -1, None)


def test_the_job_cell_program_starts_without_import_warnings():
    """``python -m cellnet.fl.runtime.job_cell`` must not be imported by its own package first
    (runpy would warn on every job cell start)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m",
                           "cellnet.fl.runtime.job_cell"], capture_output=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert b"usage" in done.stderr and b"Warning" not in done.stderr
