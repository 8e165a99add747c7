"""In-process job cells for workflow tests: server.J1 and site-N.J1 over in-memory links."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trio

from cellnet.cell import Cell, connect_in_process
from cellnet.defs import FLContextKey, MetaKey
from cellnet.fl import DXO, DataKind
from cellnet.fl.runtime import Executor, ExecutorRunner, FLContext, SessionCheck, SessionTable

JOB = "J1"


@dataclass
class Engine:
    cell: Cell
    session: object
    peer_check: SessionCheck | None
    app_dir: Path
    clients: list = field(default_factory=list)
    job_id: str = JOB
    cells: dict = field(default_factory=dict)  # every cell of the federation, by FQCN


class AddExecutor(Executor):
    """train: model + ``add`` (weight ``steps``); submit_model/validate for cross-site tests."""

    def __init__(self, add=1.0, steps=1, sleep=0.0, metric=None, shape_bug=False, diff=False):
        self.add, self.steps, self.sleep, self.metric = add, steps, sleep, metric
        self.shape_bug, self.diff = shape_bug, diff
        self.rounds: list = []

    async def execute(self, task_name, dxo, fl_ctx, abort_signal):
        if self.sleep:
            await trio.sleep(self.sleep)
        site = fl_ctx.get_prop(FLContextKey.CLIENT_NAME)
        if task_name == "submit_model":
            return DXO(DataKind.WEIGHTS, {"w": np.full(3, float(site[-1]), np.float32)})
        if task_name == "validate":
            return DXO.metrics({"mean": float(dxo.data["w"].mean()) + 10 * int(site[-1])})
        if task_name == "boom":
            raise ValueError("training diverged")
        rnd = dxo.meta.get(MetaKey.CURRENT_ROUND)
        self.rounds.append(rnd)
        data = {k: v + np.asarray(self.add, v.dtype) for k, v in dxo.data.items()}
        if self.shape_bug:
            data = {k: np.zeros(7, np.float32) for k in data}
        meta = {MetaKey.CURRENT_ROUND: rnd, MetaKey.NUM_STEPS_CURRENT_ROUND: self.steps}
        if self.metric is not None:
            meta[MetaKey.INITIAL_METRICS] = {"acc": self.metric(rnd)}
        if self.diff:
            return DXO(DataKind.WEIGHT_DIFF, {k: np.full_like(v, self.add) for k, v in
                                              dxo.data.items()}, meta)
        return DXO(DataKind.WEIGHTS, data, meta)


@contextlib.asynccontextmanager
async def job_cells(app_dir: Path, executors: dict[str, dict[str, Executor]],
                    link_config=None):
    """Yield ``engine`` of the server job cell; sites named by ``executors``' keys."""
    table = SessionTable("proj")
    sessions = {s: table.login(s) for s in executors}
    cells = {}

    async def cell(fqcn, parent=None):
        cells[fqcn] = await stack.enter_async_context(
            Cell(fqcn, parent=parent, link_config=link_config))
        return cells[fqcn]

    async with contextlib.AsyncExitStack() as stack:
        server_job = await cell(f"server.{JOB}", parent="server")
        server = await cell("server")
        await connect_in_process(server, server_job)
        for name, session in sessions.items():
            site = await cell(name, parent="server")
            job = await cell(f"{name}.{JOB}", parent=name)
            await connect_in_process(server, site)
            await connect_in_process(site, job)
            check = SessionCheck("proj", table.ssid, {"server": None}, JOB)
            runner = ExecutorRunner(Engine(job, session, check, app_dir), JOB, executors[name])
            runner.register()
        app_dir.mkdir(parents=True, exist_ok=True)
        yield Engine(server_job, table.server_session(), table.checker(None, JOB), app_dir,
                     list(executors), cells=cells)


async def run_flow(flow, engine):
    flow.engine = engine
    return await flow.control_flow(FLContext())
