"""The far side of bench_cell.py, run in its own process: raw TLS echo peers and a site cell.

Two roles, each started by ``multiprocessing`` (spawn) from ``bench_cell``:

* :func:`raw_main` listens on two ports, one wrapping each connection in stock
  ``trio.SSLStream`` and one in our ``TLSStream``, and serves the baseline
  tasks: length-prefixed ping-pong, a pipelined stream of small frames, and
  single large messages acknowledged one by one.  Each connection starts with
  a 12-byte command ``(task, amount, size)``.
* :func:`cell_main` runs ``site-1`` (connected to the bench's ``server`` over
  mutual TLS with ``open_link_stream``) and ``n_jobs`` job cells
  ``site-1.j<k>`` linked to it in-process, with the handlers the bench calls.
"""

from __future__ import annotations

import gc
import struct

import trio

from cellnet.cell import Cell, connect_in_process
from cellnet.security import server_context
from cellnet.transport import TLSStream, open_link_stream

HOST = "127.0.0.1"
LEN = struct.Struct("<I")
COMMAND = struct.Struct("<III")
PING, PIPE, BULK = 1, 2, 3
CHANNEL = "bench"


class Reader:
    """Length-prefixed frames from a stream, read in large chunks."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = await self.stream.receive_some(max(65536, n - len(self.buf)))
            if not chunk:
                raise EOFError("peer closed")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def frame(self) -> bytes:
        (n,) = LEN.unpack(await self.exactly(4))
        return await self.exactly(n)

    async def into(self, view: memoryview) -> None:
        """Fill ``view`` (buffered bytes first, then straight from the stream when possible)."""
        got = min(len(self.buf), len(view))
        view[:got] = self.buf[:got]
        del self.buf[:got]
        receive_into = getattr(self.stream, "receive_into", None)
        while got < len(view):
            if receive_into is not None:
                n = await receive_into(view[got:])
            else:
                chunk = await self.stream.receive_some(len(view) - got)
                n = len(chunk)
                view[got : got + n] = chunk
            if not n:
                raise EOFError("peer closed")
            got += n


# ---- raw baselines -------------------------------------------------------------


async def _serve_raw(stream: trio.abc.Stream) -> None:
    async with stream:
        reader = Reader(stream)
        task, amount, size = COMMAND.unpack(await reader.exactly(COMMAND.size))
        if task == PING:
            for _ in range(amount):
                msg = await reader.frame()
                await stream.send_all(LEN.pack(len(msg)) + msg)
        elif task == PIPE:
            for _ in range(amount):
                await reader.frame()
            await stream.send_all(b"k")
        elif task == BULK:
            view = memoryview(bytearray(size))
            for _ in range(amount):
                (n,) = LEN.unpack(await reader.exactly(4))
                await reader.into(view[:n])
                await stream.send_all(b"k")
        try:
            await stream.receive_some(1)
        except trio.BrokenResourceError:
            pass


async def _raw_server(kit: str, conn) -> None:
    ctx = server_context(kit)
    ssl_l = (await trio.open_tcp_listeners(0, host=HOST))[0]
    ours_l = (await trio.open_tcp_listeners(0, host=HOST))[0]
    conn.send((ssl_l.socket.getsockname()[1], ours_l.socket.getsockname()[1]))

    async def accept(listener, wrap):
        async with listener:
            while True:
                raw = await listener.accept()
                await _serve_raw(wrap(raw))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept, ssl_l, lambda raw: trio.SSLStream(raw, ctx, server_side=True))
        nursery.start_soon(accept, ours_l, lambda raw: TLSStream(raw, ctx, server_side=True))
        await trio.to_thread.run_sync(conn.recv)  # the bench says stop
        nursery.cancel_scope.cancel()


def raw_main(kit: str, conn) -> None:
    trio.run(_raw_server, kit, conn)


# ---- the site cell -------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.count = 0
        self.want = 0
        self.reached = trio.Event()

    def sink(self, msg) -> None:
        self.count += 1
        if self.count >= self.want:
            self.reached.set()

    async def drain(self, msg) -> bytes:
        """Reply once ``int(payload)`` fire-and-forget messages have been handled."""
        want = int(bytes(msg.payload))
        if self.count < want:
            self.want = want
            self.reached = trio.Event()
            await self.reached.wait()
        return str(self.count).encode()


async def _echo(msg):
    return msg.payload


def _echo_sync(msg):
    return msg.payload


async def _echo_await(msg):
    await trio.lowlevel.checkpoint()  # it suspends: served by a server task, not inline
    return msg.payload


async def _ack(msg):
    return None


async def _cell(kit: str, port: int, n_jobs: int) -> None:
    counter = _Counter()
    async with Cell("site-1") as site:
        site.register_request_cb(CHANNEL, "echo", _echo)
        site.register_request_cb(CHANNEL, "echo_sync", _echo_sync)
        site.register_request_cb(CHANNEL, "echo_await", _echo_await)
        site.register_request_cb(CHANNEL, "ack", _ack)
        site.register_request_cb(CHANNEL, "sink", counter.sink)
        site.register_request_cb(CHANNEL, "drain", counter.drain)
        async with trio.open_nursery() as nursery:
            for k in range(n_jobs):
                job = Cell(f"site-1.j{k}")
                await nursery.start(_run_job, job, site)
            # The job cells are long-lived fixtures (for the broadcast rows); as a long-running
            # server would after start-up, move them out of the collector's way, so the full
            # collections that heavy traffic triggers do not rescan them every time.
            gc.freeze()
            peer = await open_link_stream(
                HOST, port, kit, my_fqcn="site-1", expected_peer="server"
            )
            link = await site.add_link(peer.stream, peer.fqcn)
            await link.finished.wait()
            nursery.cancel_scope.cancel()


async def _run_job(job: Cell, site: Cell, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with job:
        job.register_request_cb(CHANNEL, "echo", _echo)
        await connect_in_process(site, job)
        task_status.started()
        await trio.sleep_forever()


def cell_main(kit: str, port: int, n_jobs: int) -> None:
    trio.run(_cell, kit, port, n_jobs)
