"""cellnet.client's short loop (init / is_running / receive / send) on an in-process cell pair."""

from __future__ import annotations

import numpy as np
import pytest
from agent_helpers import pair, run

import cellnet.client as flare
from cellnet.client import CallStateError, FLModel, MetaKey
from cellnet.fl.dxo import DXO, DataKind


@pytest.fixture(autouse=True)
def _fresh():
    flare.shutdown()
    yield
    flare.shutdown()


async def test_loop_receive_train_send():
    async with pair() as (side, agent):
        with pytest.raises(CallStateError, match="init"):
            flare.receive()
        assert flare.init(agent=agent) is agent
        assert flare.init() is agent  # once per process
        assert (flare.get_site_name(), flare.get_job_id()) == ("site-1", "J")
        with pytest.raises(CallStateError, match="receive"):
            await run(flare.send, {"w": np.zeros(3)})
        await side.push("t1", 2.0)
        assert await run(flare.is_running) is True
        model = await run(flare.receive)
        assert isinstance(model, FLModel) and model.task_name == "train"
        assert model.current_round == 2 and model.total_rounds is None
        model.params["w"] += 1  # writable
        assert (await run(flare.receive)).current_round == 2  # same task until sent
        with pytest.raises(TypeError):  # nothing sent, task still open
            await run(flare.send, {"w": object()})
        with pytest.raises(ValueError):
            await run(flare.send, model, None, -1)
        assert await run(flare.send, model, {"loss": np.float32(0.5)}, 7) is True
        [msg] = side.results
        dxo = DXO.from_bytes(msg.payload)
        assert dxo.kind == DataKind.WEIGHTS
        np.testing.assert_array_equal(dxo.data["w"], np.full(3, 3.0, np.float32))
        assert dxo.meta[MetaKey.NUM_STEPS_CURRENT_ROUND] == 7
        assert dxo.meta[MetaKey.CURRENT_ROUND] == 2 and dxo.meta["metrics"] == {"loss": 0.5}
        await side.push("t2")  # metrics only
        await run(flare.receive)
        assert await run(flare.send, None, {"acc": 0.9}) is True
        dxo = DXO.from_bytes(side.results[-1].payload)
        assert dxo.kind == DataKind.METRICS and float(dxo.data["acc"]) == 0.9
        assert await run(flare.receive, 0.05) is None  # timeout
        agent.stop()
        assert await run(flare.is_running) is False
        assert await run(flare.receive) is None


async def test_torch_state_dict_is_sent_as_arrays():
    torch = pytest.importorskip("torch")
    async with pair() as (side, agent):
        flare.init(agent=agent)
        await side.push("t1")
        await run(flare.receive)
        assert await run(flare.send, {"w": torch.ones(3, requires_grad=True)}) is True
        dxo = DXO.from_bytes(side.results[-1].payload)
        np.testing.assert_array_equal(dxo.data["w"], np.ones(3, np.float32))

