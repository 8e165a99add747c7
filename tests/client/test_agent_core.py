"""FlareAgent on an in-process cell pair: call order, timeouts, close, aborts and retries."""

from __future__ import annotations

import numpy as np
import pytest
import trio
from agent_helpers import AGENT, JOB_CELL, QUIET, pair, result, run

from cellnet.cell import Cell, connect_in_process
from cellnet.client import (
    RC,
    AgentClosed,
    CallStateError,
    FlareAgent,
    MetaKey,
    Task,
    TaskResult,
    agent_site_fqcn,
)
from cellnet.client import _proto as P
from cellnet.fl.dxo import DXO, DataKind
from cellnet.message import Message


async def test_task_round_trip_and_call_order():
    async with pair() as (side, agent):
        assert (agent.site_name, agent.job_id, agent.agent_id) == ("site-1", "J", "a1")
        with pytest.raises(CallStateError, match="start"):
            await run(agent.get_task, 0.01)
        agent.start()
        with pytest.raises(CallStateError, match="already started"):
            agent.start()
        with pytest.raises(CallStateError, match="get_task"):
            await run(agent.submit_result, result())
        reply = await side.push("t1", 1.5)
        assert reply.return_code == "ok"
        task = await run(agent.get_task, 1)
        assert isinstance(task, Task) and (task.task_name, task.task_id) == ("train", "t1")
        assert task.meta[MetaKey.CURRENT_ROUND] == 2
        assert task.meta[MetaKey.DATA_KIND] == DataKind.WEIGHTS
        np.testing.assert_array_equal(task.data["w"], np.full(3, 1.5, np.float32))
        with pytest.raises(CallStateError, match="t1"):  # holding a task: submit first
            await run(agent.get_task, 0.01)
        with pytest.raises(TypeError):  # bad input changes nothing: still holding t1
            await run(agent.submit_result, {"w": 1})
        with pytest.raises(TypeError):
            await run(agent.submit_result, TaskResult({}, {"w": "not an array"}))
        assert await run(agent.submit_result, result(3.0)) is True
        with pytest.raises(CallStateError):  # a single call per task
            await run(agent.submit_result, result())
        [got] = side.results
        assert got.get_header(P.TASK_ID) == "t1" and got.get_header(P.TASK_RC) == RC.OK
        dxo = DXO.from_bytes(got.payload)
        assert dxo.meta[MetaKey.NUM_STEPS_CURRENT_ROUND] == 5
        np.testing.assert_array_equal(dxo.data["w"], np.full(3, 3.0, np.float32))


async def test_get_task_timeout_then_closed():
    async with pair() as (side, agent):
        agent.start()
        with trio.fail_after(5):
            assert await run(agent.get_task, 0.05) is None
        with pytest.raises(ValueError):
            await run(agent.get_task, -1)

        def stop_later():
            trio.from_thread.run(trio.sleep, 0.05)
            agent.stop()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, stop_later)
            with pytest.raises(AgentClosed, match="stopped"):
                await run(agent.get_task, None)  # blocks until the stop
        assert agent.closed
        agent.stop()  # idempotent
        reply = await side.push("late")
        assert reply.return_code == "service_unavailable"


async def test_submit_retries_until_delivered():
    async with pair(submit_timeout=0.1) as (side, agent):
        agent.start()
        side.answers = ["stall", "stall", "accept"]
        await side.push("t1")
        await run(agent.get_task, 1)
        with trio.fail_after(5):
            assert await run(agent.submit_result, result()) is True
        assert len(side.results) == 3 and agent._core.attempts == 3
        assert all(m.get_header(P.TASK_ID) == "t1" for m in side.results)


async def test_submit_refused_or_aborted_or_closed_returns_false():
    async with pair(submit_timeout=0.1) as (side, agent):
        agent.start()
        side.answers = ["refuse"]  # the job cell no longer wants it
        await side.push("t1")
        await run(agent.get_task, 1)
        assert await run(agent.submit_result, result()) is False
        await side.push("t2")  # aborted while training: nothing is sent
        await run(agent.get_task, 1)
        await side.abort("t2")
        await trio.sleep(0.05)
        sent = len(side.results)
        assert await run(agent.submit_result, result()) is False
        assert len(side.results) == sent
        await side.push("t3")  # aborted before it was taken: dropped from the queue
        await side.abort("t3")
        await trio.sleep(0.05)
        assert await run(agent.get_task, 0.05) is None
        side.answers = ["stall"] * 100  # closed while retrying: ends undelivered
        await side.push("t4")
        await run(agent.get_task, 1)

        def stop_later():
            trio.from_thread.run(trio.sleep, 0.3)
            agent.stop()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, stop_later)
            with trio.fail_after(5):
                assert await run(agent.submit_result, result()) is False
        with pytest.raises(AgentClosed):
            await run(agent.get_task, 0.01)


async def test_tasks_from_others_and_bad_data_are_refused():
    async with pair() as (side, agent), Cell("site-1.K", link_config=QUIET) as other:
        agent.start()
        await connect_in_process(other, agent._core.cell)
        dxo = DXO(DataKind.WEIGHTS, {"w": np.zeros(1)})
        reply = await other.send_request(AGENT, P.AGENT_CHANNEL, P.AgentTopic.TASK,
                                         P.task_message("train", "x", dxo), 5)
        assert reply.return_code == "authentication_error"
        reply = await side.cell.send_request(AGENT, P.AGENT_CHANNEL, P.AgentTopic.TASK,
                                             Message({P.TASK_NAME: "t", P.TASK_ID: "i"},
                                                     b"junk"), 5)
        assert reply.return_code == "invalid_request"
        assert await run(agent.get_task, 0.01) is None


def test_reference_values_and_bad_arguments():
    assert (RC.OK, RC.EXECUTION_EXCEPTION, RC.BAD_TASK_DATA) == \
        ("OK", "EXECUTION_EXCEPTION", "BAD_TASK_DATA")
    assert MetaKey.NUM_STEPS_CURRENT_ROUND == "NUM_STEPS_CURRENT_ROUND"
    assert agent_site_fqcn("site-1", "a", "J") == "site-1.J.a"
    with pytest.raises(ValueError):
        TaskResult({}, {}, return_code="NOPE")
    with pytest.raises(ValueError):
        Task("", "id", {}, {})
    with pytest.raises(ValueError, match="not started by a site job cell"):
        FlareAgent(env={})
    with pytest.raises(RuntimeError, match="trio run"):
        FlareAgent(cell=object(), parent=JOB_CELL)
    with pytest.raises(ValueError):
        FlareAgent(env={}, submit_timeout=-1)
