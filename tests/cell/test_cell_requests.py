"""Request/reply across a federation of in-process cells: routing, errors, timeouts."""

from __future__ import annotations

import threading

import pytest
import trio
from cell_helpers import AGENT, NAMES, async_echo, echo, federation

from cellnet.cell import Cell
from cellnet.defs import CellReturnCode, ReturnCode
from cellnet.errors import FQCNError
from cellnet.message import Message
from cellnet.requests import REASON, Reason

OK = CellReturnCode.OK


async def test_request_reply_every_pair_of_the_topology(autojump_clock):
    async with federation() as cells:
        for cell in cells.values():
            cell.register_request_cb("ch", "echo", echo)
        for src in NAMES:
            for dst in NAMES:
                reply = await cells[src].send_request(dst, "ch", "echo", src.encode(), 5)
                assert reply.return_code == OK, (src, dst, reply.headers)
                assert bytes(reply.payload) == src.encode()
                assert reply.origin == dst


async def test_multi_hop_path_and_relays_count(autojump_clock):
    async with federation() as cells:
        cells["server.J"].register_request_cb("ch", "echo", async_echo)
        reply = await cells[AGENT].send_request("server.J", "ch", "echo", b"x", 5)
        assert reply.return_code == OK
        # site-1.J.a1 -> site-1.J -> site-1 -> server -> server.J: three relays
        for relay in ("site-1.J", "site-1", "server"):
            assert cells[relay].statistics().forwarded == 2  # request + reply
        assert cells["site-2"].statistics().forwarded == 0


async def test_message_headers_and_tensors_survive_relays(autojump_clock):
    np = pytest.importorskip("numpy")
    async with federation() as cells:
        seen = {}

        def handler(msg):
            seen["headers"] = dict(msg.headers)
            return {"w": msg.payload["w"] * 2}

        cells["site-2.J"].register_request_cb("ch", "t", handler)
        msg = Message({"app": "v"}, {"w": np.arange(6, dtype=np.float32)})
        reply = await cells["site-1.J"].send_request("site-2.J", "ch", "t", msg, 5)
        assert reply.return_code == OK
        assert np.array_equal(reply.payload["w"], np.arange(6, dtype=np.float32) * 2)
        assert seen["headers"]["app"] == "v"
        assert seen["headers"]["cellnet.hop_count"] == 3  # site-1, server, site-2
        assert "cellnet.req_id" not in msg.headers  # the caller's message is not changed


async def test_unknown_topic_and_handler_exception_keep_the_cell_serving(autojump_clock):
    async with federation() as cells:

        def boom(msg):
            raise RuntimeError("bad things")

        cells["site-2"].register_request_cb("ch", "boom", boom)
        cells["site-2"].register_request_cb("ch", "echo", echo)
        r = await cells["server.J"].send_request("site-2", "ch", "nope", b"", 5)
        assert r.return_code == CellReturnCode.INVALID_REQUEST
        assert r.get_header(REASON) == Reason.TOPIC_UNKNOWN
        r = await cells["server.J"].send_request("site-2", "ch", "boom", b"", 5)
        assert r.return_code == CellReturnCode.PROCESS_EXCEPTION
        assert "bad things" in r.error
        r = await cells["server.J"].send_request("site-2", "ch", "echo", b"still", 5)
        assert r.return_code == OK and bytes(r.payload) == b"still"
        errors = cells["site-2"].statistics().errors
        assert errors["topic_unknown"] == 1 and errors["handler_exception"] == 1


async def test_timeout_is_on_trios_clock(autojump_clock):
    async with federation() as cells:

        async def slow(msg):
            await trio.sleep(100)

        cells["site-1"].register_request_cb("ch", "slow", slow)
        t0 = trio.current_time()
        r = await cells["server"].send_request("site-1", "ch", "slow", None, 3)
        assert r.return_code == CellReturnCode.TIMEOUT
        assert trio.current_time() - t0 == pytest.approx(3)
        assert cells["server"].statistics().pending_requests == 0


async def test_timeouts_of_many_requests_share_one_timer(autojump_clock):
    async with federation() as cells:

        async def slow(msg):
            await trio.sleep(float(bytes(msg.payload)))
            return b"late"

        cells["site-1"].register_request_cb("ch", "slow", slow)
        server = cells["server"]
        got: dict = {}

        async def one(delay, timeout):
            t0 = trio.current_time()
            r = await server.send_request("site-1", "ch", "slow", b"%d" % delay, timeout)
            got[(delay, timeout)] = (r.return_code, trio.current_time() - t0)

        async with trio.open_nursery() as nursery:  # a later deadline first, then earlier ones
            for delay, timeout in ((50, 30), (1, 10), (50, 4), (2, 3), (50, 7)):
                nursery.start_soon(one, delay, timeout)
        for (delay, timeout), (rc, took) in got.items():
            if delay < timeout:
                assert rc == CellReturnCode.OK and took == pytest.approx(delay)
            else:
                assert rc == CellReturnCode.TIMEOUT and took == pytest.approx(timeout)
        assert len(got) == 5 and server.statistics().pending_requests == 0


async def test_unreachable_target_is_comm_error(autojump_clock):
    async with federation() as cells:
        r = await cells["site-1.J"].send_request("site-9", "ch", "t", None, 5)
        assert r.return_code == CellReturnCode.COMM_ERROR
        assert r.get_header(REASON) == Reason.NO_ROUTE
        # no route at all from an isolated cell
        async with Cell("site-7") as lone:
            r = await lone.send_request("server", "ch", "t", None, 5)
            assert r.return_code == CellReturnCode.COMM_ERROR


async def test_request_to_self_is_served_locally(autojump_clock):
    async with Cell("server") as cell:
        cell.register_request_cb("ch", "echo", echo)
        r = await cell.send_request("server", "ch", "echo", b"me", 1)
        assert r.return_code == OK and bytes(r.payload) == b"me"


async def test_bad_input_raises_typed_errors(autojump_clock):
    async with Cell("server") as cell:
        with pytest.raises(FQCNError):
            await cell.send_request("bad name", "ch", "t", None, 1)
        with pytest.raises(ValueError):
            await cell.send_request("site-1", "ch", "t", None, 0)
        with pytest.raises(ValueError):
            await cell.send_request("site-1", "", "t", None, 1)
        with pytest.raises(TypeError):
            cell.register_request_cb("ch", "t", "not callable")
        with pytest.raises(ValueError):
            cell.register_request_cb("ch", "t", async_echo, blocking=True)
        assert cell.statistics().pending_requests == 0
    with pytest.raises(RuntimeError):
        await Cell("server").send_request("site-1", "ch", "t", None, 1)


async def test_blocking_handler_runs_in_a_worker_thread():
    async with federation() as cells:
        threads = {}

        def blocking(msg):
            threads["blocking"] = threading.current_thread()
            return b"done"

        def inline(msg):
            threads["inline"] = threading.current_thread()
            return b"done"

        cells["site-1"].register_request_cb("ch", "b", blocking, blocking=True)
        cells["site-1"].register_request_cb("ch", "i", inline)
        with trio.fail_after(10):
            assert (
                await cells["server"].send_request("site-1", "ch", "b", None, 5)
            ).return_code == OK
            assert (
                await cells["server"].send_request("site-1", "ch", "i", None, 5)
            ).return_code == OK
        assert threads["blocking"] is not threading.main_thread()
        assert threads["inline"] is threading.main_thread()


async def test_handler_may_return_a_message_with_its_own_code(autojump_clock):
    async with federation() as cells:
        cells["site-2"].register_request_cb(
            "ch", "m", lambda msg: Message({"k": 1, "cellnet.return_code": "abort_run"}, b"p")
        )
        r = await cells["site-1"].send_request("site-2", "ch", "m", None, 5)
        assert r.return_code == "abort_run" and r.get_header("k") == 1
        assert bytes(r.payload) == b"p"


async def test_send_to_cell_maps_reference_codes(autojump_clock):
    async with federation() as cells:

        async def slow(msg):
            await trio.sleep(50)

        def boom(msg):
            raise ValueError("x")

        for name in ("site-1.J", "site-2.J"):
            cells[name].register_request_cb("ch", "t", echo)
        cells["site-2.J"].register_request_cb("ch", "boom", boom)
        cells["site-1.J"].register_request_cb("ch", "slow", slow)
        server = cells["server.J"]
        out = await server.send_to_cell(["site-1.J", "site-2.J"], "ch", "t", b"r", 5)
        assert {t: r.return_code for t, r in out.items()} == {
            "site-1.J": ReturnCode.OK,
            "site-2.J": ReturnCode.OK,
        }
        out = await server.send_to_cell(["site-2.J", "site-1.J"], "ch", "boom", b"", 5)
        assert out["site-2.J"].return_code == ReturnCode.EXECUTION_EXCEPTION
        assert out["site-1.J"].return_code == ReturnCode.TOPIC_UNKNOWN
        out = await server.send_to_cell(["site-1.J", "site-3.J"], "ch", "slow", b"", 2)
        assert out["site-1.J"].return_code == ReturnCode.COMMUNICATION_ERROR
        assert out["site-3.J"].return_code == ReturnCode.COMMUNICATION_ERROR
        out = await server.send_to_cell(["site-1.J", "site-3.J"], "ch", "t", b"", 2, optional=True)
        assert list(out) == ["site-1.J"]
        with pytest.raises(ValueError):
            await server.send_to_cell(["site-1.J"], "ch", "t", b"", -1)
