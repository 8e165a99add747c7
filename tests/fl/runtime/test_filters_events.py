"""Task filters on both sides, TASK_UNSUPPORTED and federation events, with real job processes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trio
from rt_helpers import federation, job_copy

from cellnet.defs import FLContextKey, MetaKey, ReturnCode, RunStatus
from cellnet.errors import JobError
from cellnet.fl import DXO, DataKind
from cellnet.fl.runtime.context import FLContext
from cellnet.fl.runtime.events import EventBus
from cellnet.fl.runtime.task_filters import FilterStage, load_task_filters

pytestmark = pytest.mark.slow
ENDED = [s for s in RunStatus if s.startswith("FINISHED:")]

WORKFLOW = '''
import numpy as np, trio
from cellnet.fl import DXO, DataKind
from cellnet.fl.runtime import Controller, Task

class W(Controller):
    def __init__(self):
        self.got = []

    def handle_event(self, event_type, fl_ctx):
        if event_type == "site_hello":
            self.got.append([fl_ctx.get_prop("__event_origin__"),
                             fl_ctx.get_prop("__event_data__"),
                             fl_ctx.get_prop("__event_scope__")])

    async def control_flow(self, fl_ctx):
        await self.engine.fire_fed_event("server_hello", {"round": 7}, fl_ctx)
        data = DXO(DataKind.WEIGHTS, {"x": np.arange(4, dtype=np.float32),
                                      "secret": np.ones(2, np.float32)})
        out = {}
        for site, r in (await self.broadcast_and_wait(Task("train", data, timeout=20),
                                                      min_responses=2)).items():
            out[site] = {"rc": r.rc, "error": r.error}
            if r.ok:
                out[site].update(history=r.dxo.history, keys=sorted(r.dxo.data),
                                 dtype=str(r.dxo.data["x"].dtype),
                                 x=[float(v) for v in r.dxo.data["x"]],
                                 seen=r.dxo.get_meta("seen"), arrived=r.dxo.get_meta("arrived"))
        first = self.clients[0]
        for name in ("validate", "refuse", "bad_in", "bad_result"):
            out[name] = (await self.send_and_wait(Task(name, data, timeout=20), first)).rc
        with trio.move_on_after(5):
            while len(self.got) < 2:
                await trio.sleep(0.02)
        out["events"] = sorted(self.got)
        out["counted"] = sorted(set(self.engine.components["counter"].seen))
        return out
'''

EXECUTOR = '''
import trio
from cellnet.fl.runtime import Executor
from cellnet.fl.runtime.executor import TaskUnsupportedError

class E(Executor):
    supported_tasks = ("train", "refuse", "bad_in", "bad_result")

    def __init__(self):
        self.seen = []

    def handle_event(self, event_type, fl_ctx):
        if event_type == "server_hello":
            self.seen.append(fl_ctx.get_prop("__event_data__"))
        if event_type == "boom":
            raise RuntimeError("a failing handler must not hurt")

    async def execute(self, task_name, dxo, fl_ctx, abort_signal):
        if task_name == "refuse":
            raise TaskUnsupportedError("not today")
        with trio.move_on_after(5):
            while not self.seen:
                await trio.sleep(0.02)
        engine = fl_ctx.get_engine()
        await engine.fire_event("boom", fl_ctx)
        await engine.fire_fed_event("site_hello", {"site": engine.session.client_name}, fl_ctx)
        meta = {**dxo.meta, "seen": self.seen, "arrived": sorted(dxo.data)}
        return dxo.replace(data={k: v * 2 for k, v in dxo.data.items()}, meta=meta)
'''

FILTERS = '''
class Tag:
    def __init__(self, label="tag"):
        self.label = label

    def process(self, dxo, fl_ctx=None):
        return dxo.replace(meta={**dxo.meta, "tag": self.label,
                                 "tag_site": fl_ctx.get_prop("__client_name__")})

class Boom:
    def process(self, dxo):
        raise ValueError("filter says no")

class Counter:
    def __init__(self, what):
        self.what, self.seen = what, []

    async def handle_event(self, event_type, fl_ctx):
        if event_type in self.what:
            self.seen.append(event_type)
'''

SERVER_CFG = {
    "workflow": {"path": "wf.W", "args": {}},
    "components": [{"id": "counter", "path": "myfilters.Counter",
                    "args": {"what": ["_start_run", "site_hello", "server_hello"]}}],
    "task_data_filters": [{"tasks": ["train"], "filters": [
        {"name": "ExcludeVars", "args": {"names": ["secret"]}}]}],
    "task_result_filters": [
        {"tasks": "*", "filters": [{"name": "Dequantize"}]},
        {"tasks": ["bad_result"], "filters": [{"path": "myfilters.Boom"}]}],
}
CLIENT_CFG = {
    "executors": [{"tasks": ["train", "validate", "refuse", "bad_in", "bad_result"],
                   "executor": {"path": "ex.E", "args": {}}}],
    "task_data_filters": [
        {"tasks": ["train"], "filters": [{"path": "myfilters.Tag", "args": {"label": "in"}}]},
        {"tasks": ["bad_in"], "filters": [{"path": "myfilters.Boom"}]}],
    "task_result_filters": [{"tasks": ["train"], "filters": [
        {"name": "Quantize", "args": {"method": "fp16"}}]}],
}


def _job(tmp_path):
    return job_copy(tmp_path, **{
        "app_server/custom/wf.py": WORKFLOW,
        "app_server/custom/myfilters.py": FILTERS,
        "app_server/config/config_fed_server.json": json.dumps(SERVER_CFG),
        "app_client/custom/ex.py": EXECUTOR,
        "app_client/custom/myfilters.py": FILTERS,
        "app_client/config/config_fed_client.json": json.dumps(CLIENT_CFG),
    })


async def test_filters_unsupported_and_federation_events_end_to_end(kits, tmp_path):
    async with federation(kits, tmp_path) as fed:
        job_id = (await fed.client.submit(_job(tmp_path)))["job_id"]
        meta = await fed.client.wait_for_status(job_id, ENDED, timeout=30)
        assert meta["status"] == RunStatus.FINISHED_COMPLETED, meta
        res = await fed.client.get_results(job_id)
    for site in ("site-1", "site-2"):
        r = res[site]
        assert r["rc"] == ReturnCode.OK, r
        # server data filter dropped 'secret' before it left; the site never saw it
        assert r["arrived"] == ["x"] and r["keys"] == ["x"]
        # quantized on the site, restored on the server
        assert r["dtype"] == "float32" and r["x"] == [0.0, 2.0, 4.0, 6.0]
        steps = [(h["name"], h["site"], h["stage"]) for h in r["history"]]
        assert steps == [("ExcludeVars", "server", FilterStage.DATA_OUT),
                         ("Tag", site, FilterStage.DATA_IN),
                         ("Quantize", site, FilterStage.RESULT_OUT),
                         ("Dequantize", "server", FilterStage.RESULT_IN)]
        assert r["seen"] == [{"round": 7}]  # the server's federation event reached the site
    assert res["validate"] == ReturnCode.TASK_UNSUPPORTED  # declared by supported_tasks
    assert res["refuse"] == ReturnCode.TASK_UNSUPPORTED  # raised by the executor
    assert res["bad_in"] == ReturnCode.TASK_DATA_FILTER_ERROR
    assert res["bad_result"] == ReturnCode.TASK_RESULT_FILTER_ERROR
    # each site's federation event reached the server's workflow, origin = the site
    # a configured component saw the runtime's START_RUN, our own and the sites' events
    assert res["counted"] == ["_start_run", "server_hello", "site_hello"]
    unique = {json.dumps(e) for e in res["events"]}  # site-1 also ran bad_result
    assert sorted(map(json.loads, unique)) == [["site-1", {"site": "site-1"}, "federation"],
                                               ["site-2", {"site": "site-2"}, "federation"]]


# --- units (no processes) ------------------------------------------------------------

def _dxo():
    return DXO(DataKind.WEIGHTS, {"a": np.ones(3, np.float32), "b": np.zeros(2, np.float32)})


async def test_chains_select_by_task_and_record_each_filter(tmp_path):
    cfg = {"task_data_filters": [
        {"tasks": "*", "filters": [{"name": "ExcludeVars", "args": {"names": ["b"]}}]},
        {"tasks": ["train"], "filters": [{"name": "Quantize", "args": {"method": "bf16"}}]}]}
    filters = load_task_filters(cfg, tmp_path, "site-9")
    out = await filters.apply(FilterStage.DATA_IN, "eval", _dxo(), FLContext())
    assert sorted(out.data) == ["a"] and [h["name"] for h in out.history] == ["ExcludeVars"]
    out = await filters.apply(FilterStage.DATA_IN, "train", _dxo(), FLContext())
    assert [(h["name"], h["site"]) for h in out.meta[MetaKey.FILTER_HISTORY]] == [
        ("ExcludeVars", "site-9"), ("Quantize", "site-9")]
    same = await filters.apply(FilterStage.RESULT_OUT, "train", _dxo(), FLContext())
    assert same.history == []  # no result filters configured


@pytest.mark.parametrize("cfg, match", [
    ({"task_data_filters": {"tasks": "*"}}, "must be a list"),
    ({"task_data_filters": [{"tasks": [], "filters": [{"name": "Dequantize"}]}]}, "tasks"),
    ({"task_result_filters": [{"tasks": "*", "filters": []}]}, "non-empty"),
    ({"task_data_filters": [{"tasks": "*", "filters": [{"name": "Nope"}]}]}, "unknown filter"),
    ({"task_data_filters": [{"tasks": "*", "filters": [{"path": "no.such.Thing"}]}]},
     "cannot load"),
    ({"task_data_filters": [{"tasks": "*", "filters": [7]}]}, "a filter is"),
    ({"task_data_filters": [{"tasks": "*", "filters": [
        {"path": "cellnet.fl.filters.Quantize", "args": {"nope": 1}}]}]}, "rejects args"),
    ({"task_data_filters": [{"tasks": "*", "filters": [{"name": "Dequantize"}], "x": 1}]},
     "exactly"),
])
def test_bad_filter_config_is_refused(tmp_path, cfg, match):
    with pytest.raises(JobError, match=match):
        load_task_filters(cfg, tmp_path, "server")


async def test_local_events_survive_a_failing_handler():
    bus = EventBus()
    seen = []

    def bad(event_type, fl_ctx):
        raise RuntimeError("boom")

    class Comp:
        async def handle_event(self, event_type, fl_ctx):
            seen.append((event_type, fl_ctx.get_prop(FLContextKey.EVENT_SCOPE)))

    bus.register(bad)
    bus.register(Comp(), ["ping"])
    mine = FLContext({"x": 1})
    assert await bus.fire_event("ping", mine) == 1
    assert mine.get_prop(FLContextKey.EVENT_SCOPE) is None  # handlers got a copy
    assert await bus.fire_event("other") == 0
    assert seen == [("ping", "local")] and bus.errors == 2
    with pytest.raises(TypeError):
        bus.register(object())
    with pytest.raises(ValueError):
        await bus.fire_event("")
    await trio.lowlevel.checkpoint()


async def test_reference_style_filter_gets_a_context_and_bad_output_is_typed(tmp_path):
    from cellnet.fl.runtime.task_filters import TaskFilterError

    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "ctxf_rt5.py").write_text(
        "class F:\n"
        "    def process(self, dxo, fl_ctx):\n"
        "        return dxo.replace(meta={**dxo.meta, 'who': fl_ctx.get_prop('__client_name__')})\n"
        "class Bad:\n"
        "    def process(self, dxo):\n"
        "        return 42\n")
    cfg = {"task_result_filters": [{"tasks": "*", "filters": [{"path": "ctxf_rt5.F"}]}],
           "task_data_filters": [{"tasks": "*", "filters": [{"path": "ctxf_rt5.Bad"}]}]}
    filters = load_task_filters(cfg, tmp_path, "server")
    out = await filters.apply(FilterStage.RESULT_IN, "t", _dxo(), None)
    assert out.meta["who"] == "server"
    assert out.history == [{"name": "F", "args": {}, "site": "server",
                            "stage": "task_result_in"}]
    with pytest.raises(TaskFilterError, match="returned int") as info:
        await filters.apply(FilterStage.DATA_OUT, "t", _dxo(), None)
    assert info.value.rc == "TASK_DATA_FILTER_ERROR"


@pytest.mark.parametrize("components, match", [
    ({"c": 1}, "must be a list"),
    ([{"path": "cellnet.fl.runtime.events.EventBus"}], "unique 'id'"),
    ([{"id": "a", "path": "cellnet.fl.runtime.events.EventBus"},
      {"id": "a", "path": "cellnet.fl.runtime.events.EventBus"}], "unique 'id'"),
    ([{"id": "a", "path": "nowhere.Thing"}], "cannot load"),
])
def test_bad_components_are_refused(tmp_path, components, match):
    from cellnet.fl.runtime.job_cell import JobEngine
    from cellnet.fl.runtime.session import Session

    engine = JobEngine(None, Session("server", "", "ssid", "p"), None, "J1", [], tmp_path)
    with pytest.raises(JobError, match=match):
        engine.setup({"components": components}, "config_fed_server.json")


def test_components_with_handle_event_are_registered(tmp_path):
    from cellnet.fl.runtime.job_cell import JobEngine
    from cellnet.fl.runtime.session import Session

    engine = JobEngine(None, Session("site-1", "t", "ssid", "p"), None, "J1", [], tmp_path)
    engine.setup({"components": [{"id": "bus", "path": "cellnet.fl.runtime.events.EventBus"},
                                 {"id": "ctx", "path": "cellnet.fl.runtime.context.FLContext"}]},
                 "config_fed_client.json")
    assert sorted(engine.components) == ["bus", "ctx"]
    assert engine.events._handlers == []  # neither has handle_event
    assert not engine.filters  # no filter chains configured
