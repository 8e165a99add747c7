"""A real PyTorch state dict through cellnet.client send/receive: names, shapes, dtypes, values.

Skipped without torch (the optional extra ``torch``).
"""

from __future__ import annotations

import numpy as np
import pytest
from agent_helpers import AGENT, pair, run

import cellnet.client as flare
from cellnet.client import MetaKey
from cellnet.client import _convert as C
from cellnet.client import _proto as P
from cellnet.fl.dxo import DXO, DataKind
from cellnet.native import dtypes

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")

NUMPY_OF = {torch.float32: np.dtype(np.float32), torch.float16: np.dtype(np.float16),
            torch.float64: np.dtype(np.float64), torch.int64: np.dtype(np.int64),
            torch.bfloat16: np.dtype(ml_dtypes.bfloat16), torch.uint8: np.dtype(np.uint8)}


@pytest.fixture(autouse=True)
def _fresh():
    flare.shutdown()
    yield
    flare.shutdown()


def state_dict() -> dict[str, torch.Tensor]:
    """A state dict with every case that once broke: half types, 0-d, views, grads."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4))
    sd = dict(net.state_dict())  # 0.weight/0.bias/1.running_mean/... 1.num_batches_tracked (0-d)
    sd["1.num_batches_tracked"] = torch.tensor(7)
    return {**sd,
            "half.w": torch.randn(3, 2, generator=g).half(),
            "bf16.w": torch.randn(2, 3, generator=g).to(torch.bfloat16),
            "bf16.scalar": torch.tensor(-1.5, dtype=torch.bfloat16),
            "f64": torch.randn(4, generator=g, dtype=torch.float64),
            "transposed": torch.randn(3, 5, generator=g).t(),  # not contiguous
            "grad": torch.randn(2, 2, generator=g, requires_grad=True),
            "mask": torch.tensor([[1, 0], [0, 1]], dtype=torch.uint8),
            "empty": torch.zeros(0, 3)}


def assert_same_tensors(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype, name
        assert got[name].shape == t.shape, name
        assert torch.equal(got[name], t.detach()), name


async def test_state_dict_round_trip_keeps_names_shapes_dtypes_values():
    sd = state_dict()
    async with pair() as (side, agent):
        flare.init(agent=agent)
        await side.push("t1")
        await run(flare.receive)
        metrics = {"accuracy": torch.tensor(0.75), "loss": np.float32(0.5)}
        assert await run(flare.send, sd, metrics, 12) is True
        # what the site got: numpy arrays of the same names, shapes, dtypes and bits
        dxo = DXO.from_bytes(side.results[-1].payload)
        assert dxo.kind == DataKind.WEIGHTS and list(dxo.data) == list(sd)
        for name, t in sd.items():
            a = dxo.data[name]
            assert a.dtype == NUMPY_OF[t.dtype] and a.shape == tuple(t.shape), name
            if t.dtype == torch.bfloat16:
                np.testing.assert_array_equal(a.view(np.int16), t.view(torch.int16).numpy())
            else:
                np.testing.assert_array_equal(a, t.detach().numpy())
        assert dxo.meta[MetaKey.NUM_STEPS_CURRENT_ROUND] == 12
        assert dxo.meta[MetaKey.INITIAL_METRICS] == {"accuracy": 0.75, "loss": 0.5}

        # and back: the site sends those arrays as the next task's model
        reply = await side.cell.send_request(AGENT, P.AGENT_CHANNEL, P.AgentTopic.TASK,
                                             P.task_message("train", "t2", dxo), 5)
        assert reply.return_code == "ok"
        model = await run(flare.receive)
        received = flare.to_torch(model.params)
        assert_same_tensors(received, sd)
        net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4))
        net.load_state_dict({k: v for k, v in received.items() if k[0] in "01"})
        assert_same_tensors(dict(net.state_dict()), {k: v for k, v in sd.items() if k[0] in "01"})
        received["0.weight"].add_(1.0)  # in-place training on what receive() gave is allowed
        np.testing.assert_array_equal(model.params["0.weight"], received["0.weight"].numpy())
        assert await run(flare.send, received, None, 1) is True
        back = DXO.from_bytes(side.results[-1].payload)
        np.testing.assert_array_equal(back.data["0.weight"], sd["0.weight"].numpy() + 1.0)
        assert MetaKey.INITIAL_METRICS not in back.meta  # no metrics sent


def test_cpu_tensors_are_sent_without_a_copy():
    t = torch.randn(4, 3)
    a = C.to_numpy("t", t)
    assert np.shares_memory(a, t.numpy())
    t.mul_(2.0)  # the view follows the tensor (send packs before it returns)
    np.testing.assert_array_equal(a, t.numpy())
    b = torch.randn(3, dtype=torch.bfloat16)
    ab = C.to_numpy("b", b)
    assert ab.dtype == dtypes.BFLOAT16 and np.shares_memory(ab.view(np.int16),
                                                            b.view(torch.int16).numpy())
    nc = torch.randn(3, 5).t()
    anc = C.to_numpy("nc", nc)  # a transposed view must be copied to be C-contiguous
    assert anc.flags.c_contiguous and anc.shape == (5, 3)
    np.testing.assert_array_equal(anc, nc.numpy())
    assert C.to_numpy("s", torch.tensor(3)).shape == ()  # 0-d stays 0-d
    assert C.to_numpy("n", np.float32(2.0)).shape == ()


def test_received_arrays_become_tensors_without_a_copy():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    bf = np.array([1.5, -2.0], dtype=dtypes.BFLOAT16)
    out = C.to_torch({"w": w, "bf": bf})
    out["w"].add_(1.0)
    np.testing.assert_array_equal(w, np.arange(1, 7, dtype=np.float32).reshape(2, 3))
    assert out["bf"].dtype == torch.bfloat16 and out["bf"].tolist() == [1.5, -2.0]
    out["bf"].mul_(2)
    assert bf.astype(np.float32).tolist() == [3.0, -4.0]  # shared memory
    ro = np.ones(3, np.float16)
    ro.flags.writeable = False  # a view into a received message: copied, no torch warning
    t = C.to_torch({"ro": ro})["ro"]
    t.add_(1.0)
    assert t.dtype == torch.float16 and ro.tolist() == [1.0, 1.0, 1.0]
    assert C.to_torch({"x": torch.ones(2)}, device="cpu")["x"].device.type == "cpu"


async def test_unsendable_tensors_are_refused_by_name_and_the_task_stays_open(monkeypatch):
    async with pair() as (side, agent):
        flare.init(agent=agent)
        await side.push("t1")
        await run(flare.receive)
        with pytest.raises(TypeError, match=r"model\['z'\]"):
            await run(flare.send, {"z": torch.ones(2, dtype=torch.complex64)})
        with pytest.raises(TypeError, match=r"model\['m'\].*meta tensor"):
            await run(flare.send, {"m": torch.empty(2, device="meta")})  # no data to send
        monkeypatch.setattr(dtypes, "BFLOAT16", None)  # as without ml_dtypes
        with pytest.raises(TypeError, match=r"model\['b'\].*ml_dtypes"):
            await run(flare.send, {"b": torch.ones(2, dtype=torch.bfloat16)})
        monkeypatch.undo()
        assert side.results == []
        assert await run(flare.send, {"w": torch.ones(3)}, None, 1) is True
        assert len(side.results) == 1
