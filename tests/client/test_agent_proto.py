"""The agent channel's task message: the DXO's arrays as a tensor payload, read back either way."""

from __future__ import annotations

import numpy as np

from cellnet.client import _proto as P
from cellnet.defs import MetaKey
from cellnet.fl.dxo import DXO, DataKind, DXOPayload
from cellnet.message import Message


def test_task_message_carries_the_arrays_without_a_packed_copy_and_reads_back():
    w = np.arange(6, dtype=np.float32)
    dxo = DXO(DataKind.WEIGHTS, {"w": w}, {MetaKey.CURRENT_ROUND.value: 3})
    msg = P.task_message("train", "t1", dxo)
    assert isinstance(msg.payload, DXOPayload) and msg.payload["w"] is w
    task = P.task_from_message(Message(dict(msg.headers), dxo.to_bytes()))  # one buffer reads too
    assert (task.task_name, task.task_id) == ("train", "t1")
    np.testing.assert_array_equal(task.data["w"], w)
    assert task.meta[MetaKey.CURRENT_ROUND.value] == 3
    assert task.meta[MetaKey.DATA_KIND.value] == DataKind.WEIGHTS.value
