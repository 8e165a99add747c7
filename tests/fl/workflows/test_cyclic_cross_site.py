"""CyclicWorkflow and CrossSiteEval on in-process job cells."""

from __future__ import annotations

import numpy as np
import pytest
from wf_helpers import AddExecutor, job_cells, run_flow

from cellnet.errors import JobError
from cellnet.fl.persistor import load_npz
from cellnet.fl.workflows import CrossSiteEval, CyclicWorkflow, format_table

INIT = {"arrays": {"w": [1.0, 2.0, 3.0]}}


def _app(tmp_path):
    return tmp_path / "job" / "app"


async def test_cyclic_passes_the_model_site_to_site(tmp_path):
    ex = {n: AddExecutor(add=float(k)) for k, n in enumerate(["site-1", "site-2"], 1)}
    async with job_cells(_app(tmp_path), {n: {"train": e} for n, e in ex.items()}) as engine:
        out = await run_flow(CyclicWorkflow(num_rounds=2, persistor=INIT), engine)
    np.testing.assert_array_equal(load_npz(out["final_model"])["w"], [7.0, 8.0, 9.0])
    assert [r["order"] for r in out["rounds"]] == [["site-1", "site-2"]] * 2
    assert ex["site-1"].rounds == [0, 1]
    rounds = sorted(p.name for p in (tmp_path / "job" / "models").iterdir())
    assert rounds == ["final.npz", "round-0.npz", "round-1.npz"]
    np.testing.assert_array_equal(load_npz(tmp_path / "job" / "models" / "round-0.npz")["w"],
                                  [4.0, 5.0, 6.0])


async def test_cyclic_random_order_is_reproducible_from_its_seed(tmp_path):
    sites = {f"site-{k}": {"train": AddExecutor()} for k in (1, 2, 3)}
    orders = []
    for attempt in range(2):
        async with job_cells(_app(tmp_path / str(attempt)), sites) as engine:
            out = await run_flow(CyclicWorkflow(num_rounds=3, persistor=INIT, order="random",
                                                seed=7), engine)
        orders.append([r["order"] for r in out["rounds"]])
    assert orders[0] == orders[1]
    assert all(sorted(o) == sorted(sites) for o in orders[0])


async def test_cyclic_stops_at_the_first_site_that_fails(tmp_path):
    late = AddExecutor()
    sites = {"site-1": {"other": AddExecutor()}, "site-2": {"train": late}}
    async with job_cells(_app(tmp_path), sites) as engine:
        with pytest.raises(JobError, match="round 0: site-1 failed its turn: site-1: "
                                           "TASK_UNKNOWN"):
            await run_flow(CyclicWorkflow(num_rounds=2, persistor=INIT), engine)
    assert late.rounds == []


def test_cyclic_refuses_bad_config():
    with pytest.raises(JobError, match="order"):
        CyclicWorkflow(persistor=INIT, order="zigzag")
    with pytest.raises(JobError, match="needs a persistor"):
        CyclicWorkflow()


async def test_cross_site_eval_fills_the_table(tmp_path):
    sites = {n: {"submit_model": AddExecutor(), "validate": AddExecutor()}
             for n in ("site-1", "site-2")}
    async with job_cells(_app(tmp_path), sites) as engine:
        out = await run_flow(CrossSiteEval(persistor=INIT, metric="mean"), engine)
    res = out["cross_site_eval"]
    assert res["models"] == ["site-1", "site-2", "server"]
    # site-k's model is all k; validating site j adds 10*j to the model's mean
    assert res["table"] == {
        "site-1": {"site-1": {"mean": 11.0}, "site-2": {"mean": 21.0}},
        "site-2": {"site-1": {"mean": 12.0}, "site-2": {"mean": 22.0}},
        "server": {"site-1": {"mean": 12.0}, "site-2": {"mean": 22.0}}}
    lines = res["text"].splitlines()
    assert lines[0].split() == ["model", "\\", "site", "site-1", "site-2"]
    assert lines[1].split() == ["site-1", "11.0000", "21.0000"]
    saved = tmp_path / "job" / "cross_site_models"
    assert sorted(p.name for p in saved.iterdir()) == ["site-1.npz", "site-2.npz"]


async def test_cross_site_eval_records_failures_in_the_table(tmp_path):
    sites = {"site-1": {"submit_model": AddExecutor(), "validate": AddExecutor()},
             "site-2": {"validate": AddExecutor()}}  # cannot submit a model
    async with job_cells(_app(tmp_path), sites) as engine:
        out = await run_flow(CrossSiteEval(), engine)
    res = out["cross_site_eval"]
    assert res["models"] == ["site-1"] and res["submit_errors"] == {"site-2": "TASK_UNKNOWN"}
    sites = {"site-1": {"validate": AddExecutor()}}
    async with job_cells(_app(tmp_path / "b"), sites) as engine:
        with pytest.raises(JobError, match="no site submitted a model; site-1: TASK_UNKNOWN"):
            await run_flow(CrossSiteEval(), engine)


def test_format_table_shows_errors_and_all_metrics():
    text = format_table({"a": {"s1": {"error": "TASK_ABORTED"}, "s2": {"x": 1.0, "y": 2.0}}},
                        None)
    assert text.splitlines()[1].split() == ["a", "TASK_ABORTED", "x=1,", "y=2"]


async def test_sequence_runs_fedavg_then_cross_site_eval_on_its_models(tmp_path):
    from cellnet.fl.workflows import ScatterAndGather, WorkflowSequence

    sites = {n: {"train": AddExecutor(), "submit_model": AddExecutor(),
                 "validate": AddExecutor()} for n in ("site-1", "site-2")}
    flow = WorkflowSequence([
        {"name": "fedavg", "path": "cellnet.fl.workflows.ScatterAndGather",
         "args": {"num_rounds": 2, "persistor": INIT}},
        {"path": "cellnet.fl.workflows.CrossSiteEval",
         "args": {"server_models": ["final"], "metric": "mean"}}])
    async with job_cells(_app(tmp_path), sites) as engine:
        out = await run_flow(flow, engine)
    assert list(out) == ["fedavg", "CrossSiteEval"]
    np.testing.assert_array_equal(load_npz(out["fedavg"]["final_model"])["w"], [3.0, 4.0, 5.0])
    table = out["CrossSiteEval"]["cross_site_eval"]["table"]
    assert table["server:final"] == {"site-1": {"mean": 14.0}, "site-2": {"mean": 24.0}}
    async with job_cells(_app(tmp_path / "b"), sites) as engine:
        with pytest.raises(JobError, match="not a Controller"):
            await run_flow(WorkflowSequence([{"path": "cellnet.fl.persistor.NPModelPersistor",
                                              "args": {"arrays": {"w": [1.0]}}}]), engine)
        with pytest.raises(JobError, match="names must differ"):
            await run_flow(WorkflowSequence([ScatterAndGather(persistor=INIT),
                                             ScatterAndGather(persistor=INIT)]), engine)


def test_sequence_and_server_models_refuse_bad_config():
    from cellnet.fl.workflows import WorkflowSequence

    with pytest.raises(JobError, match="non-empty list"):
        WorkflowSequence([])
    with pytest.raises(JobError, match=r"workflows\[0\]"):
        WorkflowSequence([{"args": {}}])
    with pytest.raises(JobError, match="server_models"):
        CrossSiteEval(server_models="final")


async def test_cross_site_eval_names_a_missing_server_model(tmp_path):
    sites = {"site-1": {"submit_model": AddExecutor(), "validate": AddExecutor()}}
    async with job_cells(_app(tmp_path), sites) as engine:
        with pytest.raises(JobError, match="server model 'best' not found"):
            await run_flow(CrossSiteEval(server_models=["best"]), engine)
