"""The cell's fast paths keep the semantics: inline serving, fnf ordering, route cache, stats."""

from __future__ import annotations

import contextlib

import pytest
import trio
from cell_helpers import QUIET

from cellnet.cell import Cell, connect_in_process
from cellnet.defs import CellReturnCode


@contextlib.asynccontextmanager
async def pair():
    async with Cell("server", link_config=QUIET) as server:
        async with Cell("site-1", link_config=QUIET) as site:
            yield server, site


async def test_fire_and_forget_order_is_kept_across_sync_and_async_handlers(autojump_clock):
    seen = []

    async def slow(msg):
        await trio.sleep(1)
        seen.append(bytes(msg.payload))

    def fast(msg):
        seen.append(bytes(msg.payload))

    async with pair() as (server, site):
        await connect_in_process(server, site)
        site.register_request_cb("ch", "slow", slow)
        site.register_request_cb("ch", "fast", fast)
        await server.fire_and_forget("site-1", "ch", "fast", b"0")
        await server.fire_and_forget("site-1", "ch", "slow", b"1")
        await server.fire_and_forget("site-1", "ch", "fast", b"2")  # must wait behind "1"
        await server.fire_and_forget("site-1", "ch", "slow", b"3")
        await trio.sleep(10)
        assert seen == [b"0", b"1", b"2", b"3"]
        for i in range(4, 8):  # the queue drained: sync handlers run inline again, in order
            await server.fire_and_forget("site-1", "ch", "fast", str(i).encode())
        await trio.sleep(1)
        assert seen == [str(i).encode() for i in range(8)]


async def test_sync_handler_served_inline_answers_and_fails_cleanly(autojump_clock):
    def boom(msg):
        raise RuntimeError("no")

    async with pair() as (server, site):
        await connect_in_process(server, site)
        site.register_request_cb("ch", "echo", lambda msg: bytes(msg.payload) * 2)
        site.register_request_cb("ch", "boom", boom)
        site.register_request_cb("ch", "bad", lambda msg: object())  # not a payload
        ok = await server.send_request("site-1", "ch", "echo", b"ab", 5)
        assert ok.return_code == CellReturnCode.OK and bytes(ok.payload) == b"abab"
        for topic in ("boom", "bad"):
            r = await server.send_request("site-1", "ch", topic, b"", 5)
            assert r.return_code == CellReturnCode.PROCESS_EXCEPTION
        assert site.statistics().errors["handler_exception"] == 2
        r = await server.send_request("site-1", "ch", "echo", b"c", 5)
        assert bytes(r.payload) == b"cc"


async def test_route_cache_follows_links_coming_and_going(autojump_clock):
    async with pair() as (server, site):
        site.register_request_cb("ch", "echo", lambda msg: b"pong")
        r = await server.send_request("site-1.J", "ch", "echo", b"", 1)
        assert r.return_code == CellReturnCode.COMM_ERROR  # no route yet (and now cached)
        left, _ = await connect_in_process(server, site)
        r = await server.send_request("site-1", "ch", "echo", b"", 1)
        assert r.return_code == CellReturnCode.OK
        left.close("test")
        with trio.fail_after(5):
            while "site-1" in server.peers:
                await trio.sleep(0.01)
        r = await server.send_request("site-1", "ch", "echo", b"", 1)
        assert r.return_code == CellReturnCode.COMM_ERROR


async def test_bulk_send_counts_every_message_per_channel(autojump_clock):
    got = []
    async with pair() as (server, site):
        await connect_in_process(server, site)
        site.register_request_cb("a", "t", lambda msg: got.append(("a", bytes(msg.payload))))
        site.register_request_cb("b", "t", lambda msg: got.append(("b", bytes(msg.payload))))
        for i in range(5):
            await server.fire_and_forget("site-1", "a", "t", b"x" * i, bulk=True)
            await server.fire_and_forget("site-1", "b", "t", b"y", bulk=True)
        await trio.sleep(1)
        assert got == [m for i in range(5) for m in (("a", b"x" * i), ("b", b"y"))]
        channels = server.statistics().channels
        assert channels["a"].messages_out == 5 and channels["a"].bytes_out == 10
        assert channels["b"].messages_out == 5 and channels["b"].bytes_out == 5


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4"])
def test_fnf_queue_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="fnf_queue"):
        Cell("server", fnf_queue=bad)


async def test_async_handlers_run_concurrently_on_reused_server_tasks(autojump_clock):
    running = 0
    most = 0

    async def slow(msg):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(1)
        running -= 1
        return bytes(msg.payload)

    async with pair() as (server, site):
        await connect_in_process(server, site)
        site.register_request_cb("ch", "slow", slow)
        for i in range(3):  # one at a time: one server task, parked between requests
            r = await server.send_request("site-1", "ch", "slow", b"%d" % i, 5)
            assert bytes(r.payload) == b"%d" % i
        assert len(site._idle_servers) == 1

        async def one(i, out):
            out[i] = await server.send_request("site-1", "ch", "slow", b"%d" % i, 5)

        out: dict = {}
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(one, i, out)
        assert trio.current_time() - t0 < 1.5  # ten 1 s handlers at once, not in turn
        assert most == 10
        assert [bytes(out[i].payload) for i in range(10)] == [b"%d" % i for i in range(10)]
        assert len(site._idle_servers) == 10  # all parked for the next burst
    assert not site._idle_servers  # the cell closed: parked tasks were cancelled


async def test_a_raising_async_handler_does_not_lose_its_server_task(autojump_clock):
    async def boom(msg):
        await trio.sleep(0)
        raise ValueError("bad")

    async with pair() as (server, site):
        await connect_in_process(server, site)
        site.register_request_cb("ch", "boom", boom)
        for _ in range(3):
            r = await server.send_request("site-1", "ch", "boom", b"", 5)
            assert r.return_code == CellReturnCode.PROCESS_EXCEPTION
        assert len(site._idle_servers) == 1
        assert site.statistics().errors["handler_exception"] == 3


async def test_the_reader_waits_for_the_requester_it_woke_and_always_gets_back():
    """Link.handback: after a reply wakes its requester, the link's reader reads on only once
    that requester hands it back -- also when the requester is cancelled as its reply lands."""
    async with pair() as (server, site):
        link, _ = await connect_in_process(server, site)
        site.register_request_cb("ch", "echo", lambda msg: msg.payload)
        resolve = server._requests.resolve
        held = []

        def resolve_then_cancel(msg):
            req = resolve(msg)
            scope.cancel()  # the requester is cancelled in the very step its reply arrives
            return req

        def handback():
            held.append(link._held)  # asked from on_frame: the reader does not wait yet
            return handback_of_link()

        handback_of_link = link.handback
        link.handback = handback

        with trio.fail_after(5):
            with trio.CancelScope() as scope:
                server._requests.resolve = resolve_then_cancel
                await server.send_request("site-1", "ch", "echo", b"a")
            server._requests.resolve = resolve
            held.clear()
            for n in range(3):  # the reader came back: the link still carries requests
                reply = await server.send_request("site-1", "ch", "echo", b"%d" % n)
                assert reply.return_code == CellReturnCode.OK and reply.payload == b"%d" % n
        assert held == [None] * 3  # each reply: held once, and handed back before the next
        assert link._held is None and not link._hold


async def test_a_reply_whose_requester_is_not_parked_on_it_does_not_hold_the_reader():
    """A reply can land while its requester is still inside the send (say, a streamed
    request); the requester may then wait on the reader itself, so nothing is held."""
    async with pair() as (server, site):
        link, _ = await connect_in_process(server, site)
        event = trio.Event()
        pending = server._requests.add("site-1", "site-1", trio.current_time(), event.set)
        reply = site._no_handler(server._stamp("req", "site-1", "ch", "t", b"", False))
        reply.headers["cellnet.req_id"] = pending.req_id
        await server._accept(reply, link)
        assert event.is_set() and pending.reply is reply
        assert not link._hold and pending.hand_back is None
        server._requests.discard(pending.req_id)
