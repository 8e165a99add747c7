"""The sync bridge from threads, and the sans-IO request table and statistics."""

from __future__ import annotations

import math

import pytest
import trio
from cell_helpers import echo, federation

from cellnet.bridge import CellBridge
from cellnet.defs import CellReturnCode, ReturnCode
from cellnet.errors import LimitExceededError
from cellnet.message import Message
from cellnet.requests import REASON, Reason, RequestTable, reply_from_result, to_reference_reply
from cellnet.stats import LatencyHistogram, payload_nbytes


async def test_bridge_from_a_thread():
    async with federation() as cells:
        cells["site-2.J"].register_request_cb("ch", "echo", echo)
        bridge = CellBridge(cells["site-1.J"])

        def blocking_code():
            one = bridge.send_request("site-2.J", "ch", "echo", b"from thread", 5)
            many = bridge.send_to_cell(["site-2.J", "site-9.J"], "ch", "echo", b"b", 5)
            fnf = bridge.fire_and_forget(["site-2.J"], "ch", "echo", b"f")
            return one, many, fnf, bridge.statistics()

        with trio.fail_after(20):
            one, many, fnf, stats = await trio.to_thread.run_sync(blocking_code)
        assert one.return_code == CellReturnCode.OK and bytes(one.payload) == b"from thread"
        assert many["site-2.J"].return_code == ReturnCode.OK
        assert many["site-9.J"].return_code == ReturnCode.COMMUNICATION_ERROR
        assert fnf == {"site-2.J": "ok"}
        assert stats.requests_completed == 3
        with pytest.raises(TypeError):
            CellBridge("not a cell")


async def test_blocking_handler_calls_another_cell_through_the_bridge():
    async with federation() as cells:
        cells["server"].register_request_cb("ch", "echo", echo)
        bridge = CellBridge(cells["site-1"])

        def relay(msg):  # runs in a worker thread, blocks on another request
            inner = bridge.send_request("server", "ch", "echo", bytes(msg.payload) * 2, 5)
            return bytes(inner.payload)

        cells["site-1"].register_request_cb("ch", "relay", relay, blocking=True)
        with trio.fail_after(20):
            r = await cells["site-2"].send_request("site-1", "ch", "relay", b"ab", 10)
        assert r.return_code == CellReturnCode.OK and bytes(r.payload) == b"abab"


def test_request_table_limits_and_failures():
    woken = []
    table = RequestTable(max_pending=2)
    a = table.add("site-1", "site-1", 0.0, lambda: woken.append("a"))
    b = table.add("site-2", "server", 0.0, lambda: woken.append("b"))
    assert a.req_id != b.req_id and len(table) == 2
    with pytest.raises(LimitExceededError):
        table.add("site-3", "server", 0.0, lambda: None)
    assert len(table) == 2  # the failed add changed nothing
    reply = Message({"cellnet.req_id": a.req_id, "cellnet.return_code": "ok"})
    assert table.resolve(reply) is a and a.reply is reply and woken == ["a"]
    assert table.resolve(reply) is None  # a second reply is ignored
    assert table.resolve(Message({"cellnet.req_id": 999})) is None
    failed = table.fail_via("server", Reason.LINK_CLOSED, "gone")
    assert failed == [b] and b.reply.return_code == CellReturnCode.COMM_ERROR
    assert b.reply.get_header(REASON) == Reason.LINK_CLOSED and woken == ["a", "b"]
    table.discard(a.req_id)
    table.discard(b.req_id)
    assert len(table) == 0
    with pytest.raises(ValueError):
        RequestTable(0)


def test_request_table_deadlines_wake_only_expired_open_requests():
    woken = []
    table = RequestTable()
    a = table.add("site-1", "site-1", 0.0, lambda: woken.append("a"), deadline=5.0)
    b = table.add("site-1", "site-1", 0.0, lambda: woken.append("b"), deadline=2.0)
    c = table.add("site-1", "site-1", 0.0, lambda: woken.append("c"))  # no deadline
    assert table.next_deadline() == 2.0
    assert table.expire(1.9) == [] and woken == []
    assert table.expire(2.0) == [b] and woken == ["b"]
    assert b.req_id in table  # the waiter discards it after building its timeout reply
    table.discard(b.req_id)
    table.resolve(Message({"cellnet.req_id": a.req_id, "cellnet.return_code": "ok"}))
    assert table.expire(10.0) == [] and woken == ["b", "a"]  # answered: not woken again
    table.discard(a.req_id)
    assert table.next_deadline() == math.inf and c.req_id in table


def test_request_table_compacts_deadlines_of_ended_requests():
    table = RequestTable()
    live = table.add("site-1", "site-1", 0.0, lambda: None, deadline=1e9)
    for i in range(5000):  # answered long before their deadlines
        req = table.add("site-1", "site-1", 0.0, lambda: None, deadline=100.0 + i)
        table.discard(req.req_id)
    assert len(table._deadlines) <= 2 * len(table) + 1024
    assert table.next_deadline() == 1e9
    assert table.expire(1e9) == [live]


def test_reply_building_and_reference_mapping():
    req = Message.request("ch", "t", b"", origin="site-1", destination="server", req_id=7)
    r = reply_from_result(req, b"data")
    assert r.return_code == "ok" and r.req_id == 7 and r.destination == "site-1"
    r = reply_from_result(req, Message({"cellnet.origin": "evil", "x": 1}, b"p"))
    assert r.origin == "server" and r.get_header("x") == 1  # routing headers are the cell's
    with pytest.raises(TypeError):
        reply_from_result(req, object())
    cases = {
        "ok": ReturnCode.OK,
        "timeout": ReturnCode.COMMUNICATION_ERROR,
        "process_exception": ReturnCode.EXECUTION_EXCEPTION,
        "something_new": ReturnCode.ERROR,
    }
    for cell_rc, expected in cases.items():
        assert to_reference_reply(req.reply(cell_rc)).return_code == expected
    unknown = req.reply("invalid_request", **{REASON: Reason.TOPIC_UNKNOWN})
    assert to_reference_reply(unknown).return_code == ReturnCode.TOPIC_UNKNOWN


def test_latency_histogram_log_buckets():
    h = LatencyHistogram()
    for seconds in (0.0, 1e-6, 1.5e-6, 0.001, 0.001, 1.0, 1e9):
        h.add(seconds)
    snap = h.snapshot()
    assert sum(snap.values()) == h.count == 7
    assert snap[1e-6] == 2 and snap[2e-6] == 1 and snap[math.inf] == 1
    assert h.quantile(0.5) == pytest.approx(1.024e-3)  # 1 ms falls in the (512, 1024] us bucket
    assert h.quantile(0.0) == 1e-6 and h.quantile(1.0) == math.inf
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError):
            h.add(bad)
    with pytest.raises(ValueError):
        h.quantile(2)
    assert LatencyHistogram().quantile(0.5) == 0.0


def test_payload_nbytes():
    np = pytest.importorskip("numpy")
    assert payload_nbytes(None) == 0
    assert payload_nbytes(b"abc") == 3
    assert payload_nbytes({"a": np.zeros(4, np.float32), "b": np.zeros(2)}) == 32


def test_bookkeeping_modules_are_sans_io():
    import ast
    import pathlib

    import cellnet

    root = pathlib.Path(cellnet.__file__).resolve().parent
    for name in ("requests.py", "stats.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for mod in names:
                    assert mod.split(".")[0] not in {"trio", "ssl", "socket", "asyncio"}, name
