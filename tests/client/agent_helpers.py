"""Helpers of the client tests: a job cell and an agent cell linked in this process."""

from __future__ import annotations

import contextlib

import cbor2
import numpy as np
import trio

from cellnet.cell import Cell, connect_in_process
from cellnet.client import FlareAgent, MetaKey, TaskResult, agent_site_fqcn
from cellnet.client import _proto as P
from cellnet.fl.dxo import DXO, DataKind
from cellnet.link import LinkConfig
from cellnet.message import Message

JOB_CELL = "site-1.J"
AGENT = agent_site_fqcn("site-1", "a1", "J")
QUIET = LinkConfig(heartbeat_interval=None, idle_timeout=None)


class JobSide:
    """The job cell's part: pushes tasks, records results, answers as told."""

    def __init__(self, cell: Cell) -> None:
        self.cell = cell
        self.results: list[Message] = []
        self.answers: list[str] = []  # per attempt: "accept", "refuse" or "stall"
        cell.register_request_cb(P.AGENT_CHANNEL, P.AgentTopic.RESULT, self._on_result)

    async def _on_result(self, msg: Message) -> Message:
        self.results.append(msg)
        answer = self.answers.pop(0) if self.answers else "accept"
        if answer == "stall":
            await trio.sleep(5)
        return Message({}, cbor2.dumps({"accepted": answer == "accept", "reason": answer}))

    async def push(self, task_id: str, x: float = 1.0, name: str = "train") -> Message:
        dxo = DXO(DataKind.WEIGHTS, {"w": np.full(3, x, np.float32)}, {MetaKey.CURRENT_ROUND: 2})
        return await self.cell.send_request(AGENT, P.AGENT_CHANNEL, P.AgentTopic.TASK,
                                            P.task_message(name, task_id, dxo), 5)

    async def abort(self, task_id: str) -> None:
        await self.cell.fire_and_forget(AGENT, P.AGENT_CHANNEL, P.AgentTopic.ABORT,
                                        Message({P.TASK_ID: task_id}))


@contextlib.asynccontextmanager
async def pair(**agent_kwargs):
    async with Cell(JOB_CELL, link_config=QUIET) as job, Cell(AGENT, parent=JOB_CELL,
                                                               link_config=QUIET) as cell:
        await connect_in_process(job, cell)
        side = JobSide(job)
        agent_kwargs.setdefault("retry_interval", 0.05)
        agent = FlareAgent(cell=cell, parent=JOB_CELL, **agent_kwargs)
        yield side, agent
        agent.stop()


def run(fn, *args):
    return trio.to_thread.run_sync(fn, *args)


def result(x: float = 2.0) -> TaskResult:
    return TaskResult({MetaKey.NUM_STEPS_CURRENT_ROUND: 5}, {"w": np.full(3, x, np.float32)})
