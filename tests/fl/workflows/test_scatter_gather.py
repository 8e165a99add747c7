"""ScatterAndGather (FedAvg) on in-process job cells: exact results, in-time folding, failures."""

from __future__ import annotations

import numpy as np
import pytest
import trio
from wf_helpers import AddExecutor, job_cells, run_flow

from cellnet.errors import JobError
from cellnet.fl import DXO, DataKind
from cellnet.fl.persistor import load_npz
from cellnet.fl.runtime import FLContext, Task
from cellnet.fl.workflows import ScatterAndGather

INIT = {"arrays": {"w": [[1, 2, 3], [4, 5, 6]], "b": [0.5]}}


def _sites(**by_site):
    return {name: {"train": ex, "boom": ex} for name, ex in by_site.items()}


def _app(tmp_path):
    return tmp_path / "job" / "app"


async def test_three_rounds_of_add_one_give_initial_plus_three(tmp_path):
    ex1, ex2 = AddExecutor(), AddExecutor()
    async with job_cells(_app(tmp_path), _sites(**{"site-1": ex1, "site-2": ex2})) as engine:
        flow = ScatterAndGather(num_rounds=3, persistor=INIT)
        out = await run_flow(flow, engine)
    final = load_npz(out["final_model"])
    np.testing.assert_array_equal(final["w"], np.array([[4, 5, 6], [7, 8, 9]], np.float32))
    np.testing.assert_array_equal(final["b"], np.array([3.5], np.float32))
    assert final["w"].dtype == np.float32
    assert ex1.rounds == [0, 1, 2] and ex2.rounds == [0, 1, 2]
    assert [r["round"] for r in out["rounds"]] == [0, 1, 2]
    assert all(sorted(r["contributors"]) == ["site-1", "site-2"] for r in out["rounds"])
    models = tmp_path / "job" / "models"
    assert sorted(p.name for p in models.iterdir()) == [
        "final.npz", "round-0.npz", "round-1.npz", "round-2.npz"]
    np.testing.assert_array_equal(load_npz(models / "round-0.npz")["b"], [1.5])


async def test_weights_come_from_the_number_of_steps(tmp_path):
    sites = _sites(**{"site-1": AddExecutor(add=1.0, steps=1),
                      "site-2": AddExecutor(add=4.0, steps=3)})
    async with job_cells(_app(tmp_path), sites) as engine:
        out = await run_flow(ScatterAndGather(num_rounds=1, persistor=INIT), engine)
    final = load_npz(out["final_model"])
    np.testing.assert_allclose(final["b"], [0.5 + (1 * 1 + 3 * 4) / 4])


async def test_results_are_folded_as_they_arrive_and_not_kept(tmp_path):
    seen = []
    sites = _sites(**{"site-1": AddExecutor(), "site-2": AddExecutor(sleep=0.2)})
    async with job_cells(_app(tmp_path), sites) as engine:
        flow = ScatterAndGather(num_rounds=1, persistor=INIT)
        flow.engine = engine
        data = DXO(DataKind.WEIGHTS, {"x": np.ones(4, np.float32)}, {"current_round": 0})

        def cb(result):
            seen.append((result.client, float(result.dxo.data["x"].sum())))

        results = await flow.broadcast_and_wait(Task("train", data, timeout=5),
                                                result_received_cb=cb)
    assert seen == [("site-1", 8.0), ("site-2", 8.0)]  # in arrival order, arrays intact
    assert all(r.ok and r.dxo.data == {} for r in results.values())  # arrays dropped
    assert results["site-1"].dxo.meta["NUM_STEPS_CURRENT_ROUND"] == 1  # meta kept


async def test_a_round_with_too_few_results_fails_within_its_timeout(tmp_path):
    sites = _sites(**{"site-1": AddExecutor(), "site-2": AddExecutor(sleep=30)})
    async with job_cells(_app(tmp_path), sites) as engine:
        flow = ScatterAndGather(num_rounds=2, persistor=INIT, train_timeout=0.5,
                                wait_time_after_min_received=0)
        t0 = trio.current_time()
        with pytest.raises(JobError) as info:
            await run_flow(flow, engine)
        assert trio.current_time() - t0 < 5
    msg = str(info.value)
    assert "round 0: 1 of the 2 results it needs" in msg and "train timeout 0.5 s" in msg
    assert "site-2: COMMUNICATION_ERROR" in msg


async def test_min_clients_lets_a_round_go_on_without_a_failing_site(tmp_path):
    sites = {"site-1": {"train": AddExecutor()},
             "site-2": {"train": AddExecutor(shape_bug=True)},  # rejected by the aggregator
             "site-3": {"other": AddExecutor()}}  # TASK_UNKNOWN
    async with job_cells(_app(tmp_path), sites) as engine:
        out = await run_flow(ScatterAndGather(num_rounds=2, min_clients=1, persistor=INIT,
                                              wait_time_after_min_received=0.1), engine)
    r0 = out["rounds"][0]
    assert r0["contributors"] == ["site-1"]
    assert "does not match the model" in r0["rejected"]["site-2"]
    assert r0["failed"] == {"site-3": "TASK_UNKNOWN"}
    np.testing.assert_array_equal(load_npz(out["final_model"])["b"], [2.5])


async def test_failing_executor_reason_reaches_the_job_error(tmp_path):
    sites = _sites(**{"site-1": AddExecutor(), "site-2": AddExecutor()})
    async with job_cells(_app(tmp_path), sites) as engine:
        flow = ScatterAndGather(num_rounds=1, persistor=INIT, train_task_name="boom")
        with pytest.raises(JobError, match=r"site-1: EXECUTION_EXCEPTION \(ValueError: "
                                           r"training diverged\)"):
            await run_flow(flow, engine)


@pytest.mark.parametrize("aggregator", ["median", "trimmed_mean"])
async def test_robust_aggregators_ignore_one_outlier(tmp_path, aggregator):
    sites = _sites(**{"site-1": AddExecutor(add=1.0), "site-2": AddExecutor(add=2.0),
                      "site-3": AddExecutor(add=1000.0)})
    async with job_cells(_app(tmp_path), sites) as engine:
        out = await run_flow(ScatterAndGather(num_rounds=1, persistor=INIT,
                                              aggregator=aggregator, trim=1), engine)
    np.testing.assert_allclose(load_npz(out["final_model"])["b"], [2.5])
    assert out["aggregator"] == aggregator


@pytest.mark.parametrize("aggregator", ["fedavg", "median"])
async def test_clip_norm_bounds_how_far_a_round_moves_the_model(tmp_path, aggregator):
    sites = _sites(**{"site-1": AddExecutor(add=100.0), "site-2": AddExecutor(add=100.0),
                      "site-3": AddExecutor(add=100.0)})
    async with job_cells(_app(tmp_path), sites) as engine:
        out = await run_flow(ScatterAndGather(num_rounds=1, persistor=INIT, clip_norm=2.0,
                                              aggregator=aggregator), engine)
    final = load_npz(out["final_model"])
    moved = np.sqrt(sum(np.sum((final[k] - np.asarray(v, np.float32)) ** 2)
                        for k, v in INIT["arrays"].items()))
    assert moved == pytest.approx(2.0, rel=1e-5)


async def test_best_model_is_the_one_with_the_best_validation_metric(tmp_path):
    def acc(rnd):  # the model sent in round 2 (initial + 2) scores best
        return 1.0 - abs(rnd - 2) / 10

    sites = _sites(**{"site-1": AddExecutor(metric=acc), "site-2": AddExecutor(metric=acc)})
    async with job_cells(_app(tmp_path), sites) as engine:
        out = await run_flow(ScatterAndGather(num_rounds=4, persistor=INIT,
                                              validation_metric="acc"), engine)
    assert out["best"] == {"metric": "acc", "value": 1.0, "model_of_round": 1}
    np.testing.assert_array_equal(load_npz(out["best_model"])["b"], [2.5])
    assert out["rounds"][3]["metrics"] == {"acc": pytest.approx(0.9)}


@pytest.mark.parametrize("args, match", [
    ({"num_rounds": 0}, "num_rounds"),
    ({"start_round": 3, "num_rounds": 3}, "start_round"),
    ({"aggregator": "mean"}, "aggregator must be one of"),
    ({"train_timeout": 0}, "train_timeout"),
    ({"clip_norm": -1}, "clip_norm"),
    ({"metric_mode": "best"}, "metric_mode"),
    ({"persistor": None}, "needs a persistor"),
])
def test_bad_config_is_refused_with_a_clear_error(args, match):
    with pytest.raises(JobError, match=match):
        ScatterAndGather(**{"persistor": INIT, **args})


async def test_min_clients_above_the_job_size_fails_before_any_task(tmp_path):
    ex = AddExecutor()
    async with job_cells(_app(tmp_path), _sites(**{"site-1": ex})) as engine:
        with pytest.raises(JobError, match="min_clients is 2 but the job has only 1"):
            await run_flow(ScatterAndGather(min_clients=2, persistor=INIT), engine)
    assert ex.rounds == []


def test_fl_context_is_not_needed_to_build_a_workflow():
    assert isinstance(FLContext(), FLContext)


async def test_a_callback_that_is_not_callable_is_refused_before_sending(tmp_path):
    ex = AddExecutor()
    async with job_cells(_app(tmp_path), _sites(**{"site-1": ex})) as engine:
        flow = ScatterAndGather(persistor=INIT)
        flow.engine = engine
        data = DXO(DataKind.WEIGHTS, {"x": np.ones(2, np.float32)})
        with pytest.raises(TypeError, match="result_received_cb must be callable"):
            await flow.broadcast_and_wait(Task("train", data), result_received_cb="nope")
    assert ex.rounds == []


async def test_weight_diff_results_are_added_to_the_global_model(tmp_path):
    sites = _sites(**{"site-1": AddExecutor(add=1.0, diff=True),
                      "site-2": AddExecutor(add=3.0, diff=True)})
    async with job_cells(_app(tmp_path), sites) as engine:
        out = await run_flow(ScatterAndGather(num_rounds=2, persistor=INIT), engine)
    np.testing.assert_array_equal(load_npz(out["final_model"])["b"], [4.5])  # 0.5 + 2 * 2
