"""Links: write coalescing, bounded queues (backpressure), heartbeats, bad frames, closing."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from cell_helpers import QUIET, echo, federation

from cellnet.cell import Cell, connect_in_process
from cellnet.defs import CellReturnCode
from cellnet.errors import LinkBusyError, LinkClosedError
from cellnet.link import Link, LinkConfig
from cellnet.message import Message
from cellnet.requests import REASON, Reason
from cellnet.wire import NEED_DATA, FrameDecoder, FrameType, encode_frame, encode_message


class CountingStream(trio.abc.Stream):
    """Wraps a stream and counts ``send_all`` calls."""

    def __init__(self, inner):
        self.inner = inner
        self.send_calls = 0

    async def send_all(self, data):
        self.send_calls += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self):
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None):
        return await self.inner.receive_some(max_bytes)

    async def aclose(self):
        await self.inner.aclose()


async def _noop(link, frame):
    pass


def frames_in(data: bytes):
    dec = FrameDecoder()
    out = []
    if data:
        dec.receive_data(data)
        while (frame := dec.next_frame()) is not NEED_DATA:
            out.append(frame)
    return out


async def test_ready_frames_share_one_send_all(autojump_clock):
    left, right = trio.testing.memory_stream_pair()
    counting = CountingStream(left)
    link = Link(counting, "peer", _noop, config=QUIET)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        for i in range(64):
            assert link.send_nowait(encode_message(Message({"i": i}, b"x" * 100)))
        await trio.sleep(1)
        assert counting.send_calls == 1 and link.writes == 1
        assert link.queued_bytes == 0
        got = frames_in(bytes(await right.receive_some()))
        assert [f.headers["i"] for f in got] == list(range(64))
        link.close()
    assert link.closed and link.close_reason == "closed by this side"


async def test_large_payload_segment_is_written_without_joining(autojump_clock):
    left, right = trio.testing.memory_stream_pair()
    counting = CountingStream(left)
    link = Link(counting, "peer", _noop, config=QUIET)
    big = bytes(range(256)) * 1024  # 256 KiB
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        link.send_nowait(encode_message(Message({"a": 1}, b"s")))
        link.send_nowait(encode_message(Message({"b": 2}, big)))
        await trio.sleep(1)
        assert counting.send_calls == 2  # small frames + big frame head, then the big payload
        data = b""
        with trio.fail_after(5):
            while len(got := frames_in(data)) < 2:
                data += await right.receive_some()
        assert bytes(got[1].payload) == big
        link.close()


async def test_queue_is_bounded_when_the_receiver_does_not_read(autojump_clock):
    bound = 64 * 1024
    left, _right = trio.testing.lockstep_stream_pair()  # nobody reads _right
    link = Link(
        left, "peer", _noop, config=LinkConfig(max_queued_bytes=bound, heartbeat_interval=None)
    )
    frame = encode_message(Message({}, b"x" * 10_000))
    size = sum(len(s) for s in frame)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        sent = 0
        with pytest.raises(LinkBusyError):
            while True:
                await link.send(frame, timeout=1)
                sent += 1
                assert link.queued_bytes <= bound
        assert sent == bound // size  # exactly as many as fit, the next one waits then fails
        assert not link.send_nowait(frame)
        link.close()
    with pytest.raises(LinkClosedError):
        await link.send(frame)


async def test_slow_receiver_makes_senders_wait_then_fail(autojump_clock):
    bound = 32 * 1024
    cfg = LinkConfig(max_queued_bytes=bound, heartbeat_interval=None, idle_timeout=None)
    async with Cell("server", link_config=cfg, send_timeout=2) as server:
        left, right = trio.testing.lockstep_stream_pair()
        link = await server.add_link(left, "site-1")
        statuses = []
        peak = 0
        for _ in range(20):
            statuses += (await server.fire_and_forget("site-1", "ch", "t", b"y" * 4000)).values()
            peak = max(peak, link.queued_bytes)
        assert peak <= bound
        assert statuses[0] == CellReturnCode.OK
        assert statuses[-1] == CellReturnCode.COMM_ERROR
        assert server.statistics().errors["link_busy"] >= 1
        # a request on the full link times out on trio's clock
        r = await server.send_request("site-1", "ch", "t", b"", 3)
        assert r.return_code == CellReturnCode.TIMEOUT
        # once the receiver reads, waiting senders get through again
        async with trio.open_nursery() as nursery:

            async def drain():
                while await right.receive_some():
                    pass

            nursery.start_soon(drain)
            assert (await server.fire_and_forget("site-1", "ch", "t", b"z")) == {"site-1": "ok"}
            await trio.sleep(1)
            assert link.queued_bytes == 0
            nursery.cancel_scope.cancel()


async def test_slow_handler_backpressures_through_the_link(autojump_clock):
    cfg = LinkConfig(max_queued_bytes=16 * 1024, heartbeat_interval=None, idle_timeout=None)
    async with (
        Cell("server", link_config=cfg, send_timeout=1000) as server,
        Cell("site-1", link_config=cfg, fnf_queue=4) as site,
    ):
        await connect_in_process(server, site)
        handled = []

        async def slow(msg):
            await trio.sleep(1)
            handled.append(1)

        site.register_request_cb("ch", "slow", slow)
        peak = 0
        for _ in range(100):
            await server.fire_and_forget("site-1", "ch", "slow", b"p" * 1000)
            peak = max(peak, server.get_link("site-1").queued_bytes)
        assert peak <= 16 * 1024
        assert trio.current_time() > 50  # the sender was held back by the slow handler
        with trio.fail_after(200):
            while len(handled) < 100:
                await trio.sleep(1)


async def test_heartbeats_keep_an_idle_link_up(autojump_clock):
    cfg = LinkConfig(heartbeat_interval=1, idle_timeout=5)
    async with federation(link_config=cfg) as cells:
        cells["site-1"].register_request_cb("ch", "echo", echo)
        await trio.sleep(1000)  # long local work: no traffic but pings
        assert "site-1" in cells["server"].peers
        r = await cells["server"].send_request("site-1", "ch", "echo", b"a", 5)
        assert r.return_code == CellReturnCode.OK


async def test_silent_peer_is_dropped_after_idle_timeout(autojump_clock):
    cfg = LinkConfig(heartbeat_interval=1, idle_timeout=5)
    async with Cell("server", link_config=cfg) as server:
        left, _right = trio.testing.memory_stream_pair()  # a peer that never answers
        link = await server.add_link(left, "site-1")
        await trio.sleep(10)
        assert link.closed and "silent" in link.close_reason
        assert server.peers == ()


async def test_bad_frame_closes_only_that_link_and_fails_its_requests(autojump_clock, caplog):
    async with federation(names=("server", "site-1"), edges=(("server", "site-1"),)) as cells:
        server = cells["server"]
        cells["site-1"].register_request_cb("ch", "echo", echo)
        left, right = trio.testing.memory_stream_pair()
        bad = await server.add_link(left, "site-2")
        result = {}

        async def ask():
            result["r"] = await server.send_request("site-2", "ch", "t", b"", 100)
            result["t"] = trio.current_time()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.sleep(1)
            await right.send_all(b"\x00" * 64)  # not a frame
        assert result["r"].return_code == CellReturnCode.COMM_ERROR
        assert result["r"].get_header(REASON) == Reason.LINK_CLOSED
        assert result["t"] < 2  # promptly, not after the 100 s timeout
        assert bad.closed and "protocol error" in bad.close_reason
        assert "bad frame magic" in caplog.text
        assert server.peers == ("site-1",)
        r = await server.send_request("site-1", "ch", "echo", b"ok", 5)
        assert r.return_code == CellReturnCode.OK


async def test_unexpected_frame_type_closes_the_link(autojump_clock):
    async with Cell("server", link_config=QUIET) as server:
        left, right = trio.testing.memory_stream_pair()
        link = await server.add_link(left, "site-1")
        await right.send_all(b"".join(encode_frame(FrameType.STREAM_DATA, {}, b"abc")))
        await trio.sleep(1)
        assert link.closed and "STREAM_DATA" in link.close_reason


async def test_link_closed_mid_request(autojump_clock):
    async with federation() as cells:

        async def slow(msg):
            await trio.sleep(100)

        cells["site-1.J"].register_request_cb("ch", "slow", slow)
        result = {}

        async def ask():
            result["r"] = await cells["server.J"].send_request("site-1.J", "ch", "slow", None, 50)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.sleep(1)
            cells["server"].get_link("server.J").close("test pulls the plug")
        assert result["r"].return_code == CellReturnCode.COMM_ERROR
        assert "test pulls the plug" in result["r"].error or "closed" in result["r"].error
        assert trio.current_time() < 10
        assert "server" not in cells["server.J"].peers


async def test_ping_is_answered_and_goodbye_closes(autojump_clock):
    async with Cell("server", link_config=QUIET) as server:
        left, right = trio.testing.memory_stream_pair()
        link = await server.add_link(left, "site-1")
        await right.send_all(b"".join(encode_frame(FrameType.PING)))
        await trio.sleep(1)
        assert [f.type for f in frames_in(bytes(await right.receive_some()))] == [FrameType.PONG]
        await right.send_all(b"".join(encode_frame(FrameType.GOAWAY, {"reason": "bye"})))
        await trio.sleep(1)
        assert link.closed and "bye" in link.close_reason


async def test_a_new_link_replaces_the_old_one(autojump_clock):
    async with Cell("server", link_config=QUIET) as server, Cell("site-1", link_config=QUIET) as s:
        s.register_request_cb("ch", "echo", echo)
        first, _ = await connect_in_process(server, s)
        second, _ = await connect_in_process(server, s)
        await trio.sleep(1)
        assert first.closed and not second.closed
        assert server.get_link("site-1") is second
        r = await server.send_request("site-1", "ch", "echo", b"x", 5)
        assert r.return_code == CellReturnCode.OK
        with pytest.raises(ValueError):
            await server.add_link(trio.testing.memory_stream_pair()[0], "server")


async def test_a_sender_in_a_loop_lets_the_writer_work_through_its_backlog(autojump_clock):
    """``send`` yields once a backlog builds up, so frames leave while a task is still
    sending in a loop, long before the queue bound would stop it."""
    left, _right = trio.testing.memory_stream_pair()
    counting = CountingStream(left)
    link = Link(counting, "peer", _noop, config=QUIET)
    frame = encode_message(Message({}, b"x" * 1000))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        await trio.sleep(0)
        for _ in range(1000):  # ~1 MB, far below max_queued_bytes (16 MiB)
            await link.send(frame)
        assert counting.send_calls >= 10  # the writer ran all along
        assert link.queued_bytes < QUIET.coalesce_below + 2000
        link.close()
