"""TLSStream's synchronous paths: one checkpoint per call, send_segments_nowait, leftovers; and
a Link's write_now over TLS (order kept with the coalescing writer)."""

from __future__ import annotations

import os
import socket

import pytest
import trio
import trio.testing
from transport_helpers import tls_pair

from cellnet.errors import LinkClosedError
from cellnet.link import Link, LinkConfig
from cellnet.wire import FrameType, encode_frame

QUIET = LinkConfig(heartbeat_interval=None, idle_timeout=None)


async def receive_exactly(stream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = await stream.receive_some(n - len(out))
        assert chunk, "unexpected end of stream"
        out += chunk
    return bytes(out)


async def test_uncontended_send_and_receive_are_checkpoints(server_ctx, client_ctx):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        async with client, server:
            with trio.testing.assert_checkpoints():
                await client.send_all(b"hello")
            await trio.sleep(0.05)  # the bytes are in the server's socket buffer already
            with trio.testing.assert_checkpoints():
                assert await server.receive_some(100) == b"hello"
            with trio.CancelScope() as scope:  # a cancelled sender sends nothing
                scope.cancel()
                await client.send_all(b"lost")
            assert scope.cancelled_caught
            await client.send_all(b"kept")
            assert await receive_exactly(server, 4) == b"kept"


async def test_send_segments_nowait_writes_without_yielding(server_ctx, client_ctx):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        async with client, server:
            with trio.testing.assert_no_checkpoints():
                assert client.send_segments_nowait([b"ab", memoryview(b"cd"), bytearray(b"e")])
            assert await receive_exactly(server, 5) == b"abcde"


async def test_send_segments_nowait_refuses_before_handshake(server_ctx, client_ctx):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx, handshake=False)
        async with client, server:
            with pytest.raises(trio.WouldBlock):
                client.send_segments_nowait([b"x"])
            with pytest.raises(TypeError):  # bad input is checked before anything is written
                await client.send_all("text")


async def test_send_segments_nowait_leftover_goes_first_on_the_next_send(server_ctx, client_ctx):
    big = os.urandom(4 << 20)  # more than the socket buffers hold while nobody reads
    with trio.fail_after(20):
        client, server = await tls_pair(server_ctx, client_ctx)
        client.transport_stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        async with client, server:
            assert client.send_segments_nowait([big]) is False  # the socket filled up
            with pytest.raises(trio.WouldBlock):  # ciphertext is still waiting
                client.send_segments_nowait([b"later"])

            async def send_rest():
                await client.send_all(b"")  # flushes what is left over
                await client.send_all(b"tail")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_rest)
                assert await receive_exactly(server, len(big) + 4) == big + b"tail"
            assert client.send_segments_nowait([b"again"])
            assert await receive_exactly(server, 5) == b"again"


def _frame(n: int) -> list:
    return encode_frame(FrameType.MESSAGE, {"n": n}, b"p" * 10)


def _collector(key: str, count: int) -> tuple:
    """``(on_frame, got, arrived)``: on_frame records ``headers[key]`` of each frame in
    ``got`` and sets ``arrived`` once ``count`` frames came."""
    got: list = []
    arrived = trio.Event()

    async def on_frame(link, frame):
        got.append(frame.headers[key])
        if len(got) == count:
            arrived.set()

    return on_frame, got, arrived


async def test_link_write_now_keeps_order_with_queued_frames(server_ctx, client_ctx):
    on_frame, got, arrived = _collector("n", 5)
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        sender = Link(client, "b", on_frame, config=QUIET)
        receiver = Link(server, "a", on_frame, config=QUIET)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            nursery.start_soon(receiver.run)
            assert sender.write_now(_frame(0))  # idle: written at once, no writer hop
            assert sender.queued_bytes == 0 and sender.writes == 1
            assert sender.send_nowait(_frame(1))
            assert not sender.write_now(_frame(2))  # frame 1 is queued: must not overtake
            await sender.send(_frame(2))
            await trio.sleep(0.05)
            assert not sender.write_now([b"x" * QUIET.coalesce_below])  # idle, but not small
            assert sender.write_now(_frame(3))  # drained: idle again
            await sender.send(_frame(4))
            await arrived.wait()
            assert got == [0, 1, 2, 3, 4]
            sender.close("done")
            with pytest.raises(LinkClosedError):
                sender.write_now(_frame(5))
            receiver.close("done")


async def test_link_write_now_needs_a_synchronous_stream():
    left, _ = trio.testing.memory_stream_pair()

    async def on_frame(link, frame):
        raise AssertionError("no frames expected")

    link = Link(left, "peer", on_frame, config=QUIET)
    assert not link.write_now(_frame(0))  # memory streams have no synchronous write path
    assert link.queued_bytes == 0 and link.frames_out == 0


async def test_link_write_now_leftover_is_flushed_by_the_writer(server_ctx, client_ctx):
    got: list[int] = []
    done = trio.Event()
    total = 40

    async def on_frame(link, frame):
        got.append(frame.headers["n"])
        if len(got) == total:
            done.set()

    def frame(n: int) -> list:
        return encode_frame(FrameType.MESSAGE, {"n": n}, b"z" * 60_000)

    with trio.fail_after(20):
        client, server = await tls_pair(server_ctx, client_ctx)
        client.transport_stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sender = Link(client, "b", on_frame, config=QUIET)
        receiver = Link(server, "a", on_frame, config=QUIET)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            inline = 0
            for n in range(total):  # nobody reads yet: the socket fills up
                if sender.write_now(frame(n)):
                    inline += 1
                else:
                    await sender.send(frame(n))
            assert 0 < inline < total  # written at once until bytes were left over
            nursery.start_soon(receiver.run)
            await done.wait()
            assert got == list(range(total))
            sender.close("done")
            receiver.close("done")


async def test_tls_over_a_generic_stream_takes_the_slow_paths(server_ctx, client_ctx):
    from cellnet.transport import TLSStream

    left, right = trio.testing.memory_stream_pair()
    client = TLSStream(left, client_ctx, server_hostname="localhost")
    server = TLSStream(right, server_ctx, server_side=True)
    data = os.urandom(300_000)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.do_handshake)
            nursery.start_soon(server.do_handshake)
        with pytest.raises(trio.WouldBlock):  # no synchronous path without a socket
            client.send_segments_nowait([b"x"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_segments, [data[:1000], memoryview(data)[1000:]])
            assert await receive_exactly(server, len(data)) == data
        await client.aclose()
        assert await server.receive_some(10) == b""  # close_notify: a clean end
        await server.aclose()


def _reply_frame(n: int) -> list:
    return encode_frame(FrameType.MESSAGE, {"reply": n})


async def test_reply_to_a_lone_frame_is_written_by_the_reader_without_waking_the_writer(
    server_ctx, client_ctx
):
    replies: list[int] = []
    got_reply = trio.Event()
    release = trio.Event()

    async def on_reply(link, frame):
        replies.append(frame.headers["reply"])
        got_reply.set()

    async def serve(link, frame):
        n = frame.headers["n"]
        if n == 99:  # the reader blocks here: frames other tasks queue must still go out
            await release.wait()
        assert link.send_nowait(_reply_frame(n))

    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        a = Link(client, "b", on_reply, config=QUIET)
        b = Link(server, "a", serve, config=QUIET)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.run)
            nursery.start_soon(b.run)
            await trio.sleep(0.05)
            for n in range(3):  # one frame per read: replies skip the writer entirely
                got_reply = trio.Event()
                assert a.write_now(_frame(n))
                await got_reply.wait()
            assert replies == [0, 1, 2]
            assert b.writer_wakeups == 0 and b.writes == 3 and b.queued_bytes == 0

            # two frames in one read: their replies are coalesced by the (woken) writer
            assert a.send_nowait(_frame(3)) and a.send_nowait(_frame(4))
            with trio.fail_after(5):
                while len(replies) < 5:
                    await trio.sleep(0.01)
            assert replies[3:] == [3, 4]

            # the reader blocked inside a frame: another task's frame wakes the writer
            got_reply = trio.Event()
            assert a.write_now(_frame(99))
            await trio.sleep(0.05)
            await b.send(_reply_frame(7))
            await got_reply.wait()
            assert replies[-1] == 7
            release.set()
            with trio.fail_after(5):
                while replies[-1] != 99:
                    await trio.sleep(0.01)
            a.close("done")
            b.close("done")


async def test_write_now_sends_a_multi_segment_frame_as_one_tls_record(server_ctx, client_ctx):
    async def on_frame(link, frame):
        raise AssertionError("no frames expected here")

    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        link = Link(client, "b", on_frame, config=QUIET)
        writes: list[int] = []
        real = client._ssl.write
        client._ssl.write = lambda data: writes.append(len(data)) or real(data)
        frame = encode_frame(FrameType.MESSAGE, {"n": 1}, b"p" * 100)
        assert len(frame) > 1  # prefix + headers, then the payload
        assert link.write_now(frame)
        assert writes == [sum(len(s) for s in frame)]  # one record: half the crypto calls
        got = await receive_exactly(server, writes[0])
        assert got == b"".join(bytes(s) for s in frame)
        await client.aclose()
        await server.aclose()


async def test_cell_serves_a_lone_sync_request_and_writes_its_reply_from_the_reader(
    server_ctx, client_ctx
):
    from cellnet.cell import Cell
    from cellnet.defs import CellReturnCode

    def boom(msg):
        raise RuntimeError("no")

    async def later(msg):
        await trio.sleep(0)
        return b"async:" + bytes(msg.payload)

    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        async with (
            Cell("server", link_config=QUIET) as srv,
            Cell("site-1", link_config=QUIET) as site,
        ):
            site.register_request_cb("ch", "echo", lambda msg: bytes(msg.payload) * 2)
            site.register_request_cb("ch", "boom", boom)
            site.register_request_cb("ch", "later", later)
            await srv.add_link(client, "site-1")
            link = await site.add_link(server, "server")
            queued = []  # replies that took the queue instead of the reader's direct write
            reply_nowait = site._reply_nowait
            site._reply_nowait = lambda *a: queued.append(a) or reply_nowait(*a)
            for n in range(3):  # each a lone frame: served in the reader, written at once
                r = await srv.send_request("site-1", "ch", "echo", b"%d" % n, 5.0)
                assert r.return_code == CellReturnCode.OK and bytes(r.payload) == b"%d%d" % (n, n)
            assert link.writer_wakeups == 0 and link.writes == 3 and link.queued_bytes == 0
            assert queued == []
            row = site.statistics().channels["ch"]
            assert (row.messages_in, row.bytes_in, row.messages_out, row.bytes_out) == (3, 3, 3, 6)
            failed = await srv.send_request("site-1", "ch", "boom", b"", 5.0)  # error reply
            assert failed.return_code == CellReturnCode.PROCESS_EXCEPTION
            assert "RuntimeError: no" in failed.error
            slow = await srv.send_request("site-1", "ch", "later", b"x", 5.0)  # a server task
            assert bytes(slow.payload) == b"async:x"
            many = [None] * 8  # pipelined: the replies are queued and coalesced as before

            async def one(i):
                many[i] = await srv.send_request("site-1", "ch", "echo", b"%d" % i, 5.0)

            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(one, i)
            assert [bytes(r.payload) for r in many] == [b"%d%d" % (i, i) for i in range(8)]



async def test_a_woken_requester_or_server_task_writes_before_the_reader_arms_its_next_read(
    server_ctx, client_ctx, monkeypatch
):
    """Link.handoff: the task a read woke (a requester given its reply, a server task given a
    request) writes its next frame before that reader waits on the socket again."""
    from cellnet.cell import Cell
    from cellnet.transport import tls

    async def later(msg):  # async: served in a server task, which the reader wakes
        return bytes(msg.payload)

    logs = {}  # the socket a stream waits on -> that stream's log
    wait = tls._wait_readable

    async def logged_wait(sock):
        if sock in logs:
            logs[sock].append("arm")
        await wait(sock)

    monkeypatch.setattr(tls, "_wait_readable", logged_wait)

    def log_io(stream, log):
        read, write = stream._read_raw, stream._write_out
        logs[stream._raw] = log

        async def logged_read():
            waited = await read()
            log.append("read")
            return waited

        def logged_write():
            log.append("write")
            return write()

        stream._read_raw, stream._write_out = logged_read, logged_write

    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        async with (
            Cell("server", link_config=QUIET) as srv,
            Cell("site-1", link_config=QUIET) as site,
        ):
            site.register_request_cb("ch", "later", later)
            await srv.add_link(client, "site-1")
            await site.add_link(server, "server")
            await srv.send_request("site-1", "ch", "later", b"warm", 5.0)
            requester_io: list[str] = []
            server_io: list[str] = []
            log_io(client, requester_io)
            log_io(server, server_io)
            for n in range(20):
                r = await srv.send_request("site-1", "ch", "later", b"%d" % n, 5.0)
                assert bytes(r.payload) == b"%d" % n
            # each read (a reply; a request) is followed by the woken task's write (the next
            # request; the reply), and only then does the reader wait on the socket again
            for log in (requester_io, server_io):
                reads = [i for i, what in enumerate(log) if what == "read"]
                assert len(reads) >= 19
                assert all(log[i + 1] == "write" for i in reads[:19]), log


async def test_replies_to_a_long_read_of_requests_leave_in_groups(server_ctx, client_ctx):
    """Requests served inline from one read: the reader writes their replies every few
    frames instead of holding all of them until the read is done."""
    on_reply, replies, done = _collector("reply", 40)

    async def serve(link, frame):
        assert link.send_nowait(_reply_frame(frame.headers["n"]))

    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        a = Link(client, "b", on_reply, config=QUIET)
        b = Link(server, "a", serve, config=QUIET)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.run)
            # all 40 requests in one write, before b reads: b handles them from one read
            assert a.write_now([b"".join(b"".join(_frame(n)) for n in range(40))])
            await trio.sleep(0.05)
            nursery.start_soon(a.run)
            await done.wait()
            assert replies == list(range(40))
            assert b.frames_in == 40
            assert b.writes >= 40 // 8  # groups of eight, not one write at the end
            a.close("done")
            b.close("done")
