"""Cell network rates over loopback mutual TLS between two processes, beside bare TLS baselines.

This process runs the ``server`` cell (listening with ``serve_links``); a
child process runs ``site-1`` (connecting with ``open_link_stream``) and
``n`` job cells ``site-1.j<k>`` linked to it in-process, so a broadcast to
256 cells crosses one TLS link and then fans out in the site process.  A
second child serves the baselines over the same kind of link: 100-byte
length-prefixed ping-pong over stock ``trio.SSLStream`` and over our
``TLSStream``, a pipelined stream of 100-byte frames (64 per write) and
single large messages each acknowledged by one byte.  Every figure sits
beside its baseline from this run:

* request/reply (100 B, 1 in flight) vs the bare ping-pongs (target 0.8x of
  stock ``trio.SSLStream``; the ``TLSStream`` ratio is shown too), measured in
  alternating rounds and compared by their medians, for a sync handler, an
  async one without ``await`` (both served in the link's reader) and an async
  one that awaits (served by a server task);
* 64 in flight vs the 1-in-flight rate (target 4x);
* fire-and-forget and bulk-send msgs/s counted at the receiver, the median
  of three runs (bulk target 200k msgs/s; the raw pipelined TLS rate is shown
  beside it);
* broadcast round latency to 8, 64 and 256 cells (256: under 100 ms);
* one 1 MiB / 64 MiB request payload, MB/s vs the raw ``TLSStream`` rate for
  one length-prefixed message of that size.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio
from cell_peer import BULK, CHANNEL, COMMAND, HOST, LEN, PING, PIPE, Reader, cell_main, raw_main
from common import Row

from cellnet.cell import Cell
from cellnet.security import client_context
from cellnet.security.local import provision_local
from cellnet.transport import TLSStream, serve_links

GROUP = "cell"
MiB = 1 << 20
SMALL = 100
JOBS = 256
ROUNDS = 7  # alternating rounds of the 1-in-flight figures and their baselines



class _Sizes:
    def __init__(self, quick: bool) -> None:
        self.ping = 2000 if quick else 10000
        self.rr1 = 2000 if quick else 10000
        self.rr64 = 10000 if quick else 50000
        self.fnf = 20000 if quick else 100000
        self.bulk = 100000 if quick else 400000
        self.pipe = 200000 if quick else 1000000
        self.rounds = 5 if quick else 15
        self.large = {1 * MiB: 20 if quick else 100, 64 * MiB: 3 if quick else 8}


# ---- baselines ------------------------------------------------------------------


async def _raw_connect(kits: Path, port: int, stock: bool, task: int, amount: int, size: int):
    ctx = client_context(kits / "site-1")
    raw = await trio.open_tcp_stream(HOST, port)
    if stock:
        stream: trio.abc.Stream = trio.SSLStream(raw, ctx, server_hostname="localhost")
    else:
        stream = TLSStream(raw, ctx, server_hostname="localhost")
    await stream.do_handshake()
    await stream.send_all(COMMAND.pack(task, amount, size))
    return stream


async def _ping(kits: Path, port: int, stock: bool, n: int) -> float:
    stream = await _raw_connect(kits, port, stock, PING, n, SMALL)
    async with stream:
        reader = Reader(stream)
        frame = LEN.pack(SMALL) + b"p" * SMALL
        t0 = time.perf_counter()
        for _ in range(n):
            await stream.send_all(frame)
            await reader.frame()
        rate = n / (time.perf_counter() - t0)
        await stream.send_all(b"x")
    return rate


async def _pipe(kits: Path, port: int, n: int) -> float:
    stream = await _raw_connect(kits, port, False, PIPE, n, SMALL)
    async with stream:
        batch = (LEN.pack(SMALL) + b"p" * SMALL) * 64
        t0 = time.perf_counter()
        for _ in range(n // 64):
            await stream.send_all(batch)
        assert await stream.receive_some(1) == b"k"
        rate = (n // 64 * 64) / (time.perf_counter() - t0)
        await stream.send_all(b"x")
    return rate


async def _raw_large(kits: Path, port: int, size: int, n: int) -> float:
    """MB/s of one ``size``-byte message and its one-byte ack (median over ``n``)."""
    stream = await _raw_connect(kits, port, False, BULK, n, size)
    data = memoryview(bytearray(b"\xab" * size))
    times = []
    async with stream:
        for _ in range(n):
            t0 = time.perf_counter()
            await stream.send_segments((LEN.pack(size), data))
            assert await stream.receive_some(1) == b"k"
            times.append(time.perf_counter() - t0)
        await stream.send_all(b"x")
    return size / statistics.median(times) / 1e6


# ---- the cell figures -----------------------------------------------------------


async def _rr(cell: Cell, n: int, in_flight: int, topic: str = "echo") -> float:
    payload = b"r" * SMALL
    per_task = n // in_flight

    async def worker() -> None:
        for _ in range(per_task):
            reply = await cell.send_request("site-1", CHANNEL, topic, payload, timeout=30)
            assert reply.return_code == "ok", reply

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(worker)
    return per_task * in_flight / (time.perf_counter() - t0)


async def _fnf(cell: Cell, n: int, bulk: bool, sent: list[int]) -> float:
    payload = b"f" * SMALL
    t0 = time.perf_counter()
    for _ in range(n):
        status = await cell.fire_and_forget("site-1", CHANNEL, "sink", payload, bulk=bulk)
        assert status["site-1"] == "ok", status
    sent[0] += n
    reply = await cell.send_request("site-1", CHANNEL, "drain", str(sent[0]).encode(), 60)
    assert reply.return_code == "ok", reply
    return n / (time.perf_counter() - t0)


async def _broadcast(cell: Cell, n: int, rounds: int) -> float:
    targets = [f"site-1.j{k}" for k in range(n)]
    payload = b"b" * SMALL
    times = []
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        replies = await cell.broadcast_request(targets, CHANNEL, "echo", payload, timeout=30)
        times.append(time.perf_counter() - t0)
        bad = [t for t, r in replies.items() if r.return_code != "ok"]
        assert len(replies) == n and not bad, bad[:3]
    return statistics.median(times[1:])  # the first round opens the job cells' routes


async def _large(cell: Cell, size: int, n: int) -> float:
    data = memoryview(bytearray(b"\xcd" * size))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = await cell.send_request("site-1", CHANNEL, "ack", data, timeout=60)
        times.append(time.perf_counter() - t0)
        assert reply.return_code == "ok", reply
    return size / statistics.median(times) / 1e6


@contextlib.asynccontextmanager
async def linked_site(kits: Path, start_peer: Callable[[int], mp.Process]):
    """A ``server`` cell listening on loopback, and the peer process ``start_peer(port)``
    (its ``site-1`` cell) linked to it; yields ``(cell, process)``, stops both after."""
    async with Cell("server") as cell, trio.open_nursery() as nursery:
        linked = trio.Event()

        async def on_link(stream, identity, fqcn) -> None:
            link = await cell.add_link(stream, fqcn)
            linked.set()
            await link.finished.wait()

        listeners = await nursery.start(
            functools.partial(serve_links, on_link, kits / "server", port=0)
        )
        proc = start_peer(listeners[0].socket.getsockname()[1])
        proc.start()
        try:
            with trio.fail_after(120):
                await linked.wait()
            yield cell, proc
        finally:
            nursery.cancel_scope.cancel()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


async def _cell_figures(kits: Path, sizes: _Sizes, ports: tuple[int, int]) -> dict:
    spawn = mp.get_context("spawn")
    out: dict = {}

    def peer(port: int) -> mp.Process:
        return spawn.Process(target=cell_main, args=(str(kits / "site-1"), port, JOBS), daemon=True)

    async with linked_site(kits, peer) as (cell, _):
        await _rr(cell, 200, 1)  # warm up
        out.update(await _interleaved_rr1(cell, kits, sizes, ports))
        out["rr64"] = await _rr(cell, sizes.rr64, 64)
        sent = [0]
        for key, n, bulk in (("fnf", sizes.fnf, False), ("bulk", sizes.bulk, True)):
            out[key] = statistics.median([await _fnf(cell, n, bulk, sent) for _ in range(3)])
        for n in (8, 64, 256):
            out[f"bc{n}"] = await _broadcast(cell, n, sizes.rounds)
        for size, n in sizes.large.items():
            out[f"large{size}"] = await _large(cell, size, n)
    return out


async def _interleaved_rr1(cell: Cell, kits: Path, sizes: _Sizes, ports: tuple[int, int]) -> dict:
    """1-in-flight rates of the cell and of the bare ping-pongs, measured in alternating
    rounds (medians), so a load change on a shared machine hits both sides alike."""
    ssl_port, ours_port = ports
    n = max(sizes.rr1 // ROUNDS, 200)
    runs: dict[str, list[float]] = {
        "ping_stock": [], "ping_ours": [], "rr1": [], "rr1_sync": [], "rr1_await": []
    }
    for _ in range(ROUNDS):
        runs["ping_stock"].append(await _ping(kits, ssl_port, True, n))
        runs["rr1"].append(await _rr(cell, n, 1))
        runs["rr1_sync"].append(await _rr(cell, n, 1, "echo_sync"))
        runs["rr1_await"].append(await _rr(cell, n, 1, "echo_await"))
        runs["ping_ours"].append(await _ping(kits, ours_port, False, n))
    return {key: statistics.median(values) for key, values in runs.items()}


async def _measure(kits: Path, sizes: _Sizes) -> tuple[dict, dict]:
    spawn = mp.get_context("spawn")
    parent, child = spawn.Pipe()
    proc = spawn.Process(target=raw_main, args=(str(kits / "server"), child), daemon=True)
    proc.start()
    try:
        ports = await trio.to_thread.run_sync(parent.recv)
        base = {"pipe": await _pipe(kits, ports[1], sizes.pipe)}
        for size, n in sizes.large.items():
            base[f"large{size}"] = await _raw_large(kits, ports[1], size, n)
        cell = await _cell_figures(kits, sizes, ports)
        base["ping_stock"], base["ping_ours"] = cell.pop("ping_stock"), cell.pop("ping_ours")
        return base, cell
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


def measure(quick: bool) -> tuple[dict, dict]:
    sizes = _Sizes(quick)
    with tempfile.TemporaryDirectory(prefix="bench-cell-") as tmp:
        root = Path(tmp)
        provision_local(root, "bench", ["site-1"], host="localhost")
        return trio.run(_measure, root / "kits", sizes)


def run(quick: bool) -> list[Row]:
    base, cell = measure(quick)
    rows = [
        Row(GROUP, "request/reply 100 B, 1 in flight (async handler)", cell["rr1"], "req/s",
            "bare trio.SSLStream ping-pong", base["ping_stock"], ">= 0.8x"),
        Row(GROUP, "request/reply 100 B, 1 in flight (sync handler)", cell["rr1_sync"],
            "req/s", "bare trio.SSLStream ping-pong", base["ping_stock"], ">= 0.8x"),
        Row(GROUP, "request/reply 100 B, 1 in flight (async handler that awaits)",
            cell["rr1_await"], "req/s", "bare trio.SSLStream ping-pong", base["ping_stock"]),
        Row(GROUP, "request/reply 100 B, 1 in flight (vs ours)", cell["rr1"], "req/s",
            "bare TLSStream ping-pong", base["ping_ours"]),
        Row(GROUP, "request/reply 100 B, 64 in flight", cell["rr64"], "req/s",
            "cell, 1 in flight", cell["rr1"], ">= 4.0x"),
        Row(GROUP, "fire-and-forget 100 B (delivered)", cell["fnf"], "msgs/s",
            "raw TLSStream, 64 frames per write", base["pipe"]),
        Row(GROUP, "bulk send 100 B (delivered)", cell["bulk"], "msgs/s",
            "issue target 200k msgs/s", 200_000.0, ">= 1.0x"),
        Row(GROUP, "bulk send 100 B (vs raw)", cell["bulk"], "msgs/s",
            "raw TLSStream, 64 frames per write", base["pipe"]),
    ]
    rtt = 1.0 / base["ping_ours"]
    for n in (8, 64):
        rows.append(Row(GROUP, f"broadcast round to {n} cells", cell[f"bc{n}"] * 1e3, "ms",
                        f"{n} sequential bare TLSStream RTTs", n * rtt * 1e3))
    rows.append(Row(GROUP, f"broadcast round to {JOBS} cells", cell[f"bc{JOBS}"] * 1e3, "ms",
                    "issue budget 100 ms", 100.0, "<= 1.0x"))
    for size in sorted(_Sizes(quick).large):
        rows.append(Row(GROUP, f"one {size // MiB} MiB request payload", cell[f"large{size}"],
                        "MB/s", "raw TLSStream, one message + ack", base[f"large{size}"]))
    return rows


if __name__ == "__main__":
    for row in run(quick=True):
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        print(f"{row.name:<44} {row.value:>12.1f} {row.unit:<7} {ratio:>7} {row.target}")
