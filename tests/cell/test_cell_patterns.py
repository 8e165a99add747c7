"""Broadcast, fire-and-forget, bulk send, optional targets, hop limit and statistics."""

from __future__ import annotations

import pytest
import trio
from cell_helpers import AGENT, QUIET, echo, federation

from cellnet.cell import Cell, connect_in_process
from cellnet.defs import CellReturnCode
from cellnet.requests import REASON, Reason
from cellnet.routing import MAX_HOPS

OK = CellReturnCode.OK


async def wait_for(predicate, limit=30):
    with trio.fail_after(limit):
        while not predicate():
            await trio.sleep(0.001)


async def test_broadcast_has_an_entry_for_every_target(autojump_clock):
    async with federation() as cells:

        async def slow(msg):
            await trio.sleep(60)

        cells["site-1.J"].register_request_cb("ch", "t", echo)
        cells["site-2.J"].register_request_cb("ch", "t", slow)
        t0 = trio.current_time()
        out = await cells["server.J"].broadcast_request(
            ["site-1.J", "site-2.J", "site-3.J", "site-1.J"], "ch", "t", b"hi", 4
        )
        assert trio.current_time() - t0 == pytest.approx(4)  # concurrently, not one by one
        assert list(out) == ["site-1.J", "site-2.J", "site-3.J"]
        assert out["site-1.J"].return_code == OK and bytes(out["site-1.J"].payload) == b"hi"
        assert out["site-2.J"].return_code == CellReturnCode.TIMEOUT
        assert out["site-3.J"].return_code == CellReturnCode.COMM_ERROR
        out = await cells["server.J"].broadcast_request(
            ["site-1.J", "site-3.J"], "ch", "t", b"", 4, optional=True
        )
        assert list(out) == ["site-1.J"]


async def test_fire_and_forget_arrives_in_order(autojump_clock):
    async with federation() as cells:
        got = []
        cells["site-2.J"].register_request_cb("ch", "f", lambda m: got.append(bytes(m.payload)))
        for i in range(50):
            status = await cells[AGENT].fire_and_forget("site-2.J", "ch", "f", b"%d" % i)
            assert status == {"site-2.J": OK}
        await wait_for(lambda: len(got) == 50)
        assert got == [b"%d" % i for i in range(50)]


async def test_fire_and_forget_optional_and_unroutable(autojump_clock):
    async with federation() as cells:
        server = cells["server"]
        assert await server.fire_and_forget(["site-1", "site-9"], "ch", "f") == {
            "site-1": OK,
            "site-9": CellReturnCode.COMM_ERROR,
        }
        assert await server.fire_and_forget(["site-1", "site-9"], "ch", "f", optional=True) == {
            "site-1": OK
        }
        assert server.statistics().errors["no_route"] == 1


@pytest.mark.parametrize("bulk_max_bytes", [256 * 1024, 4096])
async def test_bulk_send_1000_messages_in_order_in_few_frames(autojump_clock, bulk_max_bytes):
    async with federation(bulk_max_bytes=bulk_max_bytes) as cells:
        got = []

        async def record(msg):
            got.append(int(bytes(msg.payload)))

        cells["server.J"].register_request_cb("ch", "bulk", record)
        agent = cells[AGENT]
        for i in range(1000):
            await agent.fire_and_forget(["server.J"], "ch", "bulk", b"%d" % i, bulk=True)
        await wait_for(lambda: len(got) == 1000)
        assert got == list(range(1000))
        frames = agent.get_link("site-1.J").frames_out
        if bulk_max_bytes > 200_000:
            assert frames == 1  # flushed once, by the interval
        else:
            assert 10 < frames < 100  # flushed by size
        relay = cells["site-1"].get_link("server").frames_out
        assert relay <= frames + 2  # relays keep batching
        assert cells["server.J"].statistics().channels["ch"].messages_in == 1000


async def test_bulk_flush_waits_only_the_interval(autojump_clock):
    async with federation(bulk_interval=0.05) as cells:
        got = []
        cells["site-1"].register_request_cb("ch", "b", lambda m: got.append(trio.current_time()))
        t0 = trio.current_time()
        await cells["server"].fire_and_forget("site-1", "ch", "b", b"x", bulk=True)
        await wait_for(lambda: got)
        assert got[0] - t0 == pytest.approx(0.05)


async def test_hop_limit_stops_a_routing_loop(autojump_clock):
    # two sites that each believe the other is their parent: a loop
    async with (
        Cell("site-1", parent="site-2", link_config=QUIET) as a,
        Cell("site-2", parent="site-1", link_config=QUIET) as b,
        Cell("site-1.J", link_config=QUIET) as origin,
    ):
        await connect_in_process(a, b)
        await connect_in_process(a, origin)
        reply = await origin.send_request("site-3", "ch", "t", b"", 10)
        assert reply.return_code == CellReturnCode.COMM_ERROR
        assert reply.get_header(REASON) == Reason.HOP_LIMIT
        # the request crossed MAX_HOPS links (MAX_HOPS - 1 relays), the error reply one relay
        assert a.statistics().forwarded + b.statistics().forwarded == (MAX_HOPS - 1) + 1
        hop_limit = a.statistics().errors.get("hop_limit", 0)
        assert hop_limit + b.statistics().errors.get("hop_limit", 0) == 1
        # fire-and-forget in a loop is dropped too (no reply to send)
        await origin.fire_and_forget("site-3", "ch", "t")
        await wait_for(
            lambda: (
                a.statistics().errors.get("hop_limit", 0)
                + b.statistics().errors.get("hop_limit", 0)
                == 2
            )
        )


async def test_statistics(autojump_clock):
    async with federation() as cells:
        cells["site-1"].register_request_cb("ch", "echo", echo)
        for _ in range(5):
            await cells["server"].send_request("site-1", "ch", "echo", b"12345", 5)
        await cells["server"].send_request("site-1", "other", "x", None, 5)
        s = cells["server"].statistics()
        assert s.fqcn == "server"
        assert s.peers == ("server.J", "site-1", "site-2")
        assert s.channels["ch"].messages_out == 5 and s.channels["ch"].bytes_out == 25
        assert s.channels["ch"].messages_in == 5 and s.channels["ch"].bytes_in == 25
        assert s.requests_completed == 6 and sum(s.latency.values()) == 6
        assert s.errors == {"request:invalid_request": 1}
        assert s.pending_requests == 0 and set(s.queued_bytes) == set(s.peers)
        assert cells["site-1"].statistics().channels["ch"].messages_in == 5
