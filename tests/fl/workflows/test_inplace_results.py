"""In-place FedAvg: streamed results are folded chunk by chunk on the server job cell.

Small ``LinkConfig`` sizes make every result a stream of many chunks.
"""

from __future__ import annotations

import numpy as np
import pytest
import trio
from wf_helpers import JOB, AddExecutor, job_cells, run_flow

from cellnet.fl.persistor import load_npz
from cellnet.fl.runtime import inplace
from cellnet.fl.workflows import ScatterAndGather
from cellnet.link import LinkConfig
from cellnet.message import MessageHeaderKey
from cellnet.stream import BufferSink

KiB = 1024
CFG = LinkConfig(heartbeat_interval=None, idle_timeout=None, stream_threshold=32 * KiB,
                 stream_chunk=8 * KiB, stream_window=2)
# 3 tensors, ~150 KiB of float32: every task and result is a stream of ~19 chunks
MODEL = {"w": np.arange(20_000, dtype=np.float32).reshape(100, 200) * 0.25,
         "b": np.full(15_000, 0.5, np.float32), "tiny": np.zeros(3, np.float32)}
SERVER_JOB = f"server.{JOB}"


def _sites(**by_site):
    return {name: {"train": ex} for name, ex in by_site.items()}


def _persistor():
    return {"arrays": {k: v.tolist() for k, v in MODEL.items()}, "save_rounds": False}


@pytest.fixture
def opened(monkeypatch):
    """``(destination, size)`` of every BufferSink opened (a payload reassembled whole)."""
    seen: list[tuple[str, int]] = []
    real = BufferSink.open

    def spy(self, info):
        seen.append((info.headers.get(MessageHeaderKey.DESTINATION.value), info.size))
        real(self, info)

    monkeypatch.setattr(BufferSink, "open", spy)
    return seen


@pytest.fixture
def folded(monkeypatch):
    """Sites whose result streams were folded in place, one entry per finished stream."""
    sites: list[str] = []
    real = inplace.FoldSink.finish

    def spy(self):
        out = real(self)
        sites.append(self.site)
        return out

    monkeypatch.setattr(inplace.FoldSink, "finish", spy)
    return sites


async def _run(tmp_path, in_place, sites, **args):
    async with job_cells(tmp_path / "job" / "app", sites, link_config=CFG) as engine:
        flow = ScatterAndGather(persistor=_persistor(), in_place=in_place,
                                wait_time_after_min_received=0, **args)
        out = await run_flow(flow, engine)
    return out, load_npz(out["final_model"])


async def test_streamed_results_give_the_model_of_the_whole_buffer_path(tmp_path, opened,
                                                                        folded):
    def sites():
        return _sites(**{"site-1": AddExecutor(add=1.0, steps=1),
                         "site-2": AddExecutor(add=4.0, steps=3)})

    out, model = await _run(tmp_path / "a", True, sites(), num_rounds=2)
    assert [r["in_place"] for r in out["rounds"]] == [True, True]
    assert sorted(folded) == ["site-1", "site-1", "site-2", "site-2"]  # all streamed
    # the server job cell never reassembled a result; the sites did reassemble their tasks
    assert [s for d, s in opened if d == SERVER_JOB] == []
    assert sum(1 for d, _ in opened if d != SERVER_JOB) == 4
    folded.clear()
    ref_out, ref = await _run(tmp_path / "b", False, sites(), num_rounds=2)
    assert [r["in_place"] for r in ref_out["rounds"]] == [False, False] and folded == []
    assert [s for d, s in opened if d == SERVER_JOB]  # the whole-buffer path reassembles
    assert sorted(model) == sorted(MODEL)
    for name, a in MODEL.items():
        np.testing.assert_array_equal(model[name], ref[name])
        np.testing.assert_array_equal(model[name], a + 2 * (1 * 1 + 3 * 4) / 4)
        assert model[name].dtype == np.float32
    assert out["rounds"][0]["contributors"] and out["rounds"][0]["aggregate_seconds"] > 0


@pytest.mark.parametrize("low_memory", [False, True])
async def test_a_result_stream_cut_mid_way_is_not_counted(tmp_path, monkeypatch, opened,
                                                          low_memory):
    """site-3's link is cut after part of its result was folded: the round is gathered
    again from the others, so the average holds no partial update, and goes on."""
    ex1, ex2, ex3 = AddExecutor(add=1.0), AddExecutor(add=4.0, steps=3), AddExecutor(add=99)
    cut = []
    real = inplace.FoldSink._fold_elems
    async_cells = {}

    def fold_then_cut(self, e, raw):
        real(self, e, raw)
        if self.site == "site-3" and not cut and self._elem > 2000:
            cut.append(self.folded)
            async_cells["server"].get_link("site-3").close("test: link cut mid-stream")

    monkeypatch.setattr(inplace.FoldSink, "_fold_elems", fold_then_cut)
    sites = _sites(**{"site-1": ex1, "site-2": ex2, "site-3": ex3})
    async with job_cells(tmp_path / "job" / "app", sites, link_config=CFG) as engine:
        async_cells.update(engine.cells)
        flow = ScatterAndGather(persistor=_persistor(), num_rounds=2, min_clients=2,
                                wait_time_after_min_received=0, train_timeout=60,
                                low_memory=low_memory)
        out = await run_flow(flow, engine)
    model = load_npz(out["final_model"])
    assert cut == [1]  # site-3 had folded part of a tensor when its stream broke
    r0, r1 = out["rounds"]
    assert "site-3" in r0["regathered_without"] and r0["failed"]["site-3"]
    assert sorted(r0["contributors"]) == ["site-1", "site-2"]
    assert r0["seconds"] < 30  # the broken result was failed at once, not timed out
    assert ex1.rounds == [0, 0, 1] and ex2.rounds == [0, 0, 1]  # round 0 gathered twice
    assert sorted(r1["contributors"]) == ["site-1", "site-2"]
    for name, a in MODEL.items():
        np.testing.assert_array_equal(model[name], a + 2 * (1 * 1 + 3 * 4) / 4)
    assert [s for d, s in opened if d == SERVER_JOB] == []


class WrongShape(AddExecutor):
    async def execute(self, task_name, dxo, fl_ctx, abort_signal):
        out = await super().execute(task_name, dxo, fl_ctx, abort_signal)
        return out.replace(data={"w": np.zeros(50_000, np.float32)})


async def test_a_streamed_result_refused_at_its_head_is_not_counted(tmp_path, folded):
    """A result that fails the model check before its first fold: rejected, nothing folded."""
    sites = _sites(**{"site-1": AddExecutor(), "site-2": AddExecutor(add=3.0),
                      "site-3": WrongShape()})
    out, model = await _run(tmp_path, True, sites, num_rounds=1, min_clients=2)
    r0 = out["rounds"][0]
    assert sorted(r0["contributors"]) == ["site-1", "site-2"]
    assert "regathered_without" not in r0 and sorted(folded) == ["site-1", "site-2"]
    assert r0["failed"]["site-3"] == "EXECUTION_RESULT_ERROR"
    np.testing.assert_array_equal(model["b"], MODEL["b"] + 2)


async def test_robust_aggregators_and_clipping_keep_whole_results(tmp_path, opened, folded):
    sites = _sites(**{"site-1": AddExecutor(), "site-2": AddExecutor(add=3.0)})
    out, _ = await _run(tmp_path, True, sites, num_rounds=1, aggregator="median")
    assert out["rounds"][0]["in_place"] is False and folded == []
    assert len([s for d, s in opened if d == SERVER_JOB]) == 2


class _Halve:
    """A server-side result filter: it needs each result's whole arrays."""

    def __init__(self):
        self.seen: list[int] = []

    def process(self, dxo):
        self.seen.append(dxo.nbytes)
        return dxo.replace(data={k: v / 2 for k, v in dxo.data.items()})


async def test_server_result_filters_fall_back_to_whole_results(tmp_path, folded):
    from cellnet.fl.runtime.task_filters import TaskFilters, _Entry

    halve = _Halve()
    sites = _sites(**{"site-1": AddExecutor(add=2.0), "site-2": AddExecutor(add=2.0)})
    async with job_cells(tmp_path / "job" / "app", sites, link_config=CFG) as engine:
        engine.filters = TaskFilters("server", result=[_Entry(None, [halve])])
        flow = ScatterAndGather(persistor=_persistor(), num_rounds=1,
                                wait_time_after_min_received=0)
        out = await run_flow(flow, engine)
    assert folded == [] and halve.seen == [sum(a.nbytes for a in MODEL.values())] * 2
    assert out["rounds"][0]["in_place"] is False
    np.testing.assert_array_equal(load_npz(out["final_model"])["b"], (MODEL["b"] + 2) / 2)


async def test_a_site_still_training_when_the_wait_ends_is_aborted_not_counted(
        tmp_path, opened, folded):
    sites = _sites(**{"site-1": AddExecutor(), "site-2": AddExecutor(add=3.0),
                      "site-3": AddExecutor(add=50.0, sleep=0.3)})
    async with job_cells(tmp_path / "job" / "app", sites, link_config=CFG) as engine:
        flow = ScatterAndGather(persistor=_persistor(), num_rounds=2, min_clients=2,
                                wait_time_after_min_received=0)
        out = await run_flow(flow, engine)
        await trio.sleep(0.5)  # site-3's answers (aborted) arrive meanwhile
    for r in out["rounds"]:
        assert sorted(r["contributors"]) == ["site-1", "site-2"]
        assert "regathered_without" not in r and r["failed"] == {"site-3": "TASK_ABORTED"}
    assert "site-3" not in folded
    assert [s for d, s in opened if d == SERVER_JOB] == []
    np.testing.assert_array_equal(load_npz(out["final_model"])["b"], MODEL["b"] + 4)


@pytest.mark.parametrize("diff", [False, True])
async def test_low_memory_releases_the_sent_model_and_gives_the_same_model(tmp_path,
                                                                         monkeypatch, diff):
    released = []
    real = ScatterAndGather._release

    def spy(self, task, spill):
        real(self, task, spill)
        released.append(sorted(self.model))
        assert all(a.strides == (0,) * a.ndim for a in self.model.values())  # no memory

    monkeypatch.setattr(ScatterAndGather, "_release", spy)
    sites = _sites(**{"site-1": AddExecutor(add=1.0, diff=diff),
                      "site-2": AddExecutor(add=4.0, steps=3, diff=diff)})
    out, model = await _run(tmp_path, True, sites, num_rounds=2, low_memory=True)
    assert released == [sorted(MODEL)] * 2 and all(r["in_place"] for r in out["rounds"])
    assert not (tmp_path / "job" / ".cellnet-sent-model").exists()
    for name, a in MODEL.items():
        np.testing.assert_array_equal(model[name], a + 2 * (1 * 1 + 3 * 4) / 4)


@pytest.mark.parametrize("big", [False, True])
async def test_low_memory_auto_spills_only_big_models(tmp_path, monkeypatch, big):
    import cellnet.fl.workflows.scatter_gather as sg

    size = sum(a.nbytes for a in MODEL.values())
    monkeypatch.setattr(sg, "LOW_MEMORY_AUTO_BYTES", size if big else size + 1)
    released = []
    real = ScatterAndGather._release
    monkeypatch.setattr(ScatterAndGather, "_release",
                        lambda self, task, spill: released.append(1) or real(self, task, spill))
    sites = _sites(**{"site-1": AddExecutor(add=1.0), "site-2": AddExecutor(add=4.0, steps=3)})
    _, model = await _run(tmp_path, True, sites, num_rounds=1)  # low_memory="auto"
    assert bool(released) is big
    for name, a in MODEL.items():
        np.testing.assert_array_equal(model[name], a + (1 * 1 + 3 * 4) / 4)
