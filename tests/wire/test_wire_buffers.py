"""PayloadPool: aligned buffers, reused only once nothing refers to them."""

from __future__ import annotations

import numpy as np
import pytest
from wire_helpers import drain

from cellnet.message import Message
from cellnet.wire import (
    FrameDecoder,
    FrameType,
    PayloadPool,
    decode_message,
    encode_frame,
    encode_message,
)


def _addr(buf) -> int:
    return np.frombuffer(buf, np.uint8).ctypes.data


def _frame(n: int, fill: bytes = b"x") -> bytes:
    return b"".join(encode_frame(FrameType.MESSAGE, None, fill * n))


def test_buffer_reused_only_after_release():
    pool = PayloadPool()
    dec = FrameDecoder(allocate_payload=pool)
    dec.receive_data(_frame(100_000))
    (f1,) = drain(dec)
    first = _addr(f1.payload)
    assert first % 64 == 0
    msg = decode_message(f1)
    del f1
    dec.receive_data(_frame(100_000, b"y"))
    (f2,) = drain(dec)
    assert _addr(f2.payload) != first  # msg still holds the first buffer
    assert bytes(msg.payload) == b"x" * 100_000  # and it was not overwritten
    del msg
    dec.receive_data(_frame(100_000, b"z"))
    (f3,) = drain(dec)
    assert _addr(f3.payload) == first and pool.reused == 1
    assert f3.payload == b"z" * 100_000


def test_numpy_view_keeps_buffer_busy():
    pool = PayloadPool(max_buffers=1)
    view = pool(FrameType.MESSAGE, 0, {}, 1000)
    arr = np.frombuffer(view, np.uint8)
    del view
    other = pool(FrameType.MESSAGE, 0, {}, 1000)
    assert not np.shares_memory(arr, np.frombuffer(other, np.uint8))


def test_sizes_must_fit_without_waste():
    pool = PayloadPool()
    small = pool(None, 0, {}, 1000)
    small_addr = _addr(small)
    del small
    assert _addr(pool(None, 0, {}, 10_000)) != small_addr  # too small
    assert _addr(pool(None, 0, {}, 1000)) == small_addr
    assert len(pool._raw) <= pool.max_buffers


def test_pool_with_message_round_trip():
    dec = FrameDecoder(allocate_payload=PayloadPool())
    msg = Message({"k": 1}, b"p" * 70_000)
    for _ in range(3):
        dec.receive_data(b"".join(encode_message(msg)))
        (f,) = drain(dec)
        assert decode_message(f) == msg


@pytest.mark.parametrize("bad", [0, -1, 1.0])
def test_pool_validation(bad):
    with pytest.raises(ValueError):
        PayloadPool(bad)
