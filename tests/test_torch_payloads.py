"""Torch CPU tensors in tensor payloads: sent as numpy views of their memory (no copy).

torch is an optional extra; a stand-in class named like ``torch.Tensor`` tests the
conversion everywhere, the real thing runs when torch is installed."""

from __future__ import annotations

import types

import numpy as np
import pytest

from cellnet._torch import as_numpy_tensors, is_torch_tensor
from cellnet.errors import LocalProtocolError
from cellnet.message import Message
from cellnet.native import ffi
from cellnet.wire import FrameDecoder, decode_message
from cellnet.wire.codec import _tensor_segments, encode_message


class Tensor:
    """Just enough of torch.Tensor: device, detach(), numpy() sharing memory."""

    def __init__(self, array, device="cpu", fail=None):
        self._a = array
        self.device = types.SimpleNamespace(type=device)
        self._fail = fail
        self.nbytes = array.nbytes

    def detach(self):
        return self

    def numpy(self):
        if self._fail:
            raise TypeError(self._fail)
        return self._a


Tensor.__module__ = "torch"


def _addr(buf) -> int:
    return int(ffi.cast("uintptr_t", ffi.from_buffer(buf)))


def test_torch_like_tensors_round_trip_without_a_copy():
    w = np.arange(1000, dtype=np.float32).reshape(10, 100)
    segs = _tensor_segments({"w": Tensor(w), "n": np.ones(3)})
    assert any(_addr(s) == w.ctypes.data for s in segs)  # the tensor's own memory goes out
    dec = FrameDecoder()
    dec.receive_data(b"".join(bytes(s) for s in encode_message(Message({}, {"w": Tensor(w)}))))
    got = decode_message(dec.next_frame()).payload
    np.testing.assert_array_equal(got["w"], w)


def test_plain_mappings_are_left_alone_and_meta_is_kept():
    plain = {"a": np.ones(2)}
    assert as_numpy_tensors(plain) is plain

    class WithMeta(dict):
        meta = {"round": 3}

    out = as_numpy_tensors(WithMeta(t=Tensor(np.zeros(4))))
    assert isinstance(out["t"], np.ndarray) and out.meta == {"round": 3}
    assert is_torch_tensor(Tensor(np.zeros(1))) and not is_torch_tensor(np.zeros(1))


@pytest.mark.parametrize("tensor, match", [
    (Tensor(np.zeros(4), device="cuda"), "CPU"),
    (Tensor(np.zeros(4), fail="Got unsupported ScalarType BFloat16"), "numpy"),
])
def test_gpu_or_unviewable_tensors_are_refused(tensor, match):
    with pytest.raises(LocalProtocolError, match=match):
        encode_message(Message({}, {"x": tensor}))


def test_real_torch_cpu_tensors():
    torch = pytest.importorskip("torch")
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    dec = FrameDecoder()
    dec.receive_data(b"".join(bytes(s) for s in encode_message(Message({}, {"t": t}))))
    np.testing.assert_array_equal(decode_message(dec.next_frame()).payload["t"], t.numpy())
