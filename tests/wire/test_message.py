"""Message: header names, builders, reply bookkeeping, payload validation."""

from __future__ import annotations

import array

import numpy as np
import pytest

from cellnet.message import Message, MessageHeaderKey, MessageType, PayloadKind

K = MessageHeaderKey


def test_reserved_names_share_a_prefix_and_are_unique():
    values = [k.value for k in MessageHeaderKey]
    assert len(set(values)) == len(values)
    assert all(v.startswith("cellnet.") for v in values)
    assert K.HOP_COUNT == "cellnet.hop_count"


def test_request_maps_reserved_keyword_names():
    m = Message.request("task", "train", b"x", req_id=7, origin="site-1", job_id="j1")
    assert m.headers == {
        "cellnet.channel": "task",
        "cellnet.topic": "train",
        "cellnet.msg_type": "req",
        "cellnet.req_id": 7,
        "cellnet.origin": "site-1",
        "job_id": "j1",
    }
    got = (m.channel, m.topic, m.msg_type, m.req_id, m.origin)
    assert got == ("task", "train", "req", 7, "site-1")
    assert m.msg_type == MessageType.REQUEST
    assert m.hop_count == 0


def test_fire_and_forget():
    m = Message.fire_and_forget("ch", "tp")
    assert m.msg_type == MessageType.FIRE_AND_FORGET and m.payload is None


def test_reply_swaps_addresses_and_keeps_req_id():
    req = Message.request("task", "train", None, req_id=3, origin="site-1", destination="server")
    rep = req.reply("EXECUTION_EXCEPTION", b"tb", error="boom", hop_count=0)
    assert rep.msg_type == "reply"
    assert (rep.channel, rep.topic, rep.req_id) == ("task", "train", 3)
    assert (rep.origin, rep.destination) == ("server", "site-1")
    assert (rep.return_code, rep.error) == ("EXECUTION_EXCEPTION", "boom")
    assert rep.payload == b"tb"
    assert req.headers[K.ORIGIN] == "site-1"  # the request is untouched
    with pytest.raises(ValueError):
        req.reply("")


def test_strenum_header_names_become_plain_str():
    m = Message({K.TOPIC: "t"})
    m.set_header(K.CHANNEL, "c")
    assert all(type(k) is str for k in m.headers)
    assert m.get_header(K.CHANNEL) == "c" and m.get_header("cellnet.topic") == "t"
    assert m.get_header("missing", 5) == 5


@pytest.mark.parametrize(
    "payload",
    [b"abc", bytearray(b"abc"), memoryview(b"abc"), array.array("i", [1, 2]), None, {}],
)
def test_accepted_payloads(payload):
    m = Message({}, payload)
    assert m.payload is not None or payload is None


def test_payload_kind():
    assert Message().payload_kind is PayloadKind.NONE
    assert Message({}, b"").payload_kind is PayloadKind.BYTES
    assert Message({}, {"w": np.zeros(2)}).payload_kind is PayloadKind.TENSORS


@pytest.mark.parametrize(
    ("headers", "payload", "exc"),
    [
        ({}, "text", TypeError),
        ({}, 12, TypeError),
        ({}, np.zeros(3), TypeError),
        ({}, {"w": [1, 2]}, TypeError),
        ({}, {1: np.zeros(2)}, TypeError),
        ({}, memoryview(b"abcdef")[::2], ValueError),
        ({1: "x"}, None, TypeError),
        ([("a", 1)], None, TypeError),
    ],
)
def test_rejected_inputs(headers, payload, exc):
    with pytest.raises(exc):
        Message(headers, payload)


@pytest.mark.parametrize(("channel", "topic"), [("", "t"), ("c", ""), (None, "t"), ("c", 3)])
def test_builders_need_channel_and_topic(channel, topic):
    with pytest.raises(ValueError):
        Message.request(channel, topic)


def test_equality_and_repr():
    a = Message({"k": 1}, {"w": np.arange(3, dtype=np.float32)})
    b = Message({"k": 1}, {"w": np.arange(3, dtype=np.float32)})
    assert a == b
    assert a != Message({"k": 1}, {"w": np.arange(3, dtype=np.float64)})
    assert a != Message({"k": 1}, b"")
    assert Message({}, b"ab") == Message({}, bytearray(b"ab"))
    assert Message({}, None) != Message({}, b"")
    assert "float32[3]" in repr(a) and "<2 bytes>" in repr(Message({}, b"ab"))
    with pytest.raises(TypeError):
        hash(a)
