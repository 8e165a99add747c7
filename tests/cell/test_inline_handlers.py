"""Async handlers that cannot suspend run inline, like sync ones; the rest keep their tasks."""

from __future__ import annotations

import functools

import pytest
import trio
from cell_helpers import QUIET

from cellnet._handlers import Handler, never_suspends
from cellnet.cell import Cell, connect_in_process
from cellnet.defs import CellReturnCode


async def plain(msg):
    return msg


async def awaits(msg):
    await trio.sleep(0)


async def iterates(msg):
    async for _ in msg:
        pass


async def enters(msg):
    async with msg:
        pass


async def comprehends(msg):
    return [x async for x in msg]


def sync(msg):
    return msg


class AsyncCallable:
    async def __call__(self, msg):
        return msg

    async def method(self, msg):
        return msg

    async def waiting_method(self, msg):
        await trio.sleep(0)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (plain, True),
        (functools.partial(plain), True),
        (AsyncCallable(), True),
        (AsyncCallable().method, True),
        (awaits, False),
        (iterates, False),
        (enters, False),
        (comprehends, False),
        (AsyncCallable().waiting_method, False),
        (functools.partial(awaits), False),
        (sync, False),  # not a coroutine function at all
        (lambda msg: msg, False),
    ],
)
def test_never_suspends_reads_the_bytecode(fn, expected):
    assert never_suspends(fn) is expected


def test_handler_kinds():
    assert Handler(sync).inline
    assert not Handler(sync, blocking=True).inline  # blocking: a worker thread
    assert Handler(plain).inline
    assert not Handler(awaits).inline
    assert Handler(plain).call(b"x") == b"x"  # the coroutine, run to its end


async def test_an_async_handler_without_await_is_served_in_the_reader_like_a_sync_one(
    autojump_clock,
):
    tasks: dict[str, object] = {}

    def sync_handler(msg):
        tasks["sync"] = trio.lowlevel.current_task()
        return b"s"

    async def async_inline(msg):
        tasks["inline"] = trio.lowlevel.current_task()
        return b"a" + bytes(msg.payload)

    async def async_waiting(msg):
        await trio.sleep(0)
        tasks["task"] = trio.lowlevel.current_task()
        return b"w"

    async def boom(msg):
        raise ValueError("bad input")

    async with (
        Cell("server", link_config=QUIET) as server,
        Cell("site-1", link_config=QUIET) as site,
    ):
        await connect_in_process(server, site)
        for topic, fn in (("sync", sync_handler), ("inline", async_inline),
                          ("task", async_waiting), ("boom", boom)):
            site.register_request_cb("ch", topic, fn)
        for topic, want in (("sync", b"s"), ("inline", b"ax"), ("task", b"w")):
            reply = await server.send_request("site-1", "ch", topic, b"x", 5.0)
            assert reply.return_code == CellReturnCode.OK and bytes(reply.payload) == want
        assert tasks["inline"] is tasks["sync"]  # both ran in the link's reader
        assert tasks["task"] is not tasks["sync"]  # a server task
        failed = await server.send_request("site-1", "ch", "boom", b"", 5.0)
        assert failed.return_code == CellReturnCode.PROCESS_EXCEPTION
        assert "ValueError: bad input" in failed.error
        again = await server.send_request("site-1", "ch", "inline", b"y", 5.0)
        assert bytes(again.payload) == b"ay"  # the cell keeps serving


async def test_inline_async_fire_and_forget_handlers_keep_arrival_order(autojump_clock):
    seen: list[bytes] = []

    async def inline(msg):
        seen.append(bytes(msg.payload))

    async def slow(msg):
        await trio.sleep(1)
        seen.append(bytes(msg.payload))

    async with (
        Cell("server", link_config=QUIET) as server,
        Cell("site-1", link_config=QUIET) as site,
    ):
        await connect_in_process(server, site)
        site.register_request_cb("ch", "inline", inline)
        site.register_request_cb("ch", "slow", slow)
        await server.fire_and_forget("site-1", "ch", "inline", b"0")
        await server.fire_and_forget("site-1", "ch", "slow", b"1")
        await server.fire_and_forget("site-1", "ch", "inline", b"2")  # waits behind "1"
        for i in range(3, 6):
            await server.fire_and_forget("site-1", "ch", "inline", str(i).encode(), bulk=True)
        await trio.sleep(5)
        assert seen == [str(i).encode() for i in range(6)]
