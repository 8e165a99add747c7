"""TLS engine rates between two processes over loopback mutual TLS 1.3: bulk GB/s and ping-pong.

Bulk: 1 GiB (quick: 128 MiB) sent in 1 MiB writes from this process to a
receiver process, timed from the end of the handshake to the receiver's
one-byte acknowledgement, three ways in the same run: (a) blocking ``ssl``
sockets, (b) stock ``trio.SSLStream``, (c) our ``TLSStream``.  Ours is judged
against the better of (a) and (b), "best raw TLS".  Ping-pong: 100-byte
round trips over ``TLSStream`` beside the same over ``trio.SSLStream``.
Kits are provisioned into a temporary directory for the run.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import statistics
import tempfile
import time
from pathlib import Path

import trio
from common import Row, gbps

from cellnet.security import client_context, server_context
from cellnet.security.local import provision_local
from cellnet.transport import TLSStream

GROUP = "tls"
MiB = 1 << 20
CHUNK = MiB
PING = 100
HOST = "127.0.0.1"



# ---- the receiver process -----------------------------------------------


def _receiver(mode: str, task: str, kit: str, amount: int, conn) -> None:
    """Child process: accept one link, then drain ``amount`` bytes or echo ``amount`` pings."""
    ctx = server_context(kit)
    if mode == "blocking":
        _blocking_receiver(ctx, task, amount, conn)
    else:
        trio.run(_trio_receiver, mode, ctx, task, amount, conn)


def _blocking_receiver(ctx, task, amount, conn) -> None:
    with socket.create_server((HOST, 0)) as lsock:
        conn.send(lsock.getsockname()[1])
        raw, _ = lsock.accept()
    with ctx.wrap_socket(raw, server_side=True) as tls:
        tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        got = 0
        while got < amount:
            n = tls.recv_into(view)
            if not n:
                raise RuntimeError("sender closed early")
            got += n
        tls.sendall(b"k")
        tls.recv(1)


async def _trio_receiver(mode, ctx, task, amount, conn) -> None:
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    conn.send(listeners[0].socket.getsockname()[1])
    raw = await listeners[0].accept()
    await listeners[0].aclose()
    if mode == "sslstream":
        stream = trio.SSLStream(raw, ctx, server_side=True)
    else:
        stream = TLSStream(raw, ctx, server_side=True)
    async with stream:
        await stream.do_handshake()
        if task == "bulk":
            got = 0
            if mode == "sslstream":
                while got < amount:
                    got += len(await stream.receive_some(CHUNK))
            else:
                buf = bytearray(CHUNK)
                while got < amount:
                    got += await stream.receive_into(buf)
            await stream.send_all(b"k")
        else:
            for _ in range(amount):
                msg = await _exactly(stream, PING)
                await stream.send_all(msg)
        await stream.receive_some(1)


async def _exactly(stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            raise RuntimeError("peer closed early")
        data += chunk
    return data


# ---- the sender (this process) -------------------------------------------


def _blocking_sender(ctx, port: int, nbytes: int) -> float:
    data = memoryview(bytearray(b"\xab" * CHUNK))
    raw = socket.create_connection((HOST, port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.do_handshake()
        t0 = time.perf_counter()
        for _ in range(nbytes // CHUNK):
            tls.sendall(data)
        assert tls.recv(1) == b"k"
        elapsed = time.perf_counter() - t0
        tls.sendall(b"x")
    return elapsed


async def _trio_sender(mode, ctx, port: int, task: str, amount: int) -> float:
    raw = await trio.open_tcp_stream(HOST, port)
    if mode == "sslstream":
        stream = trio.SSLStream(raw, ctx, server_hostname="localhost")
    else:
        stream = TLSStream(raw, ctx, server_hostname="localhost")
    async with stream:
        await stream.do_handshake()
        t0 = time.perf_counter()
        if task == "bulk":
            data = bytes(b"\xab" * CHUNK)
            for _ in range(amount // CHUNK):
                await stream.send_all(data)
            assert await stream.receive_some(1) == b"k"
        else:
            msg = b"p" * PING
            for _ in range(amount):
                await stream.send_all(msg)
                await _exactly(stream, PING)
        elapsed = time.perf_counter() - t0
        await stream.send_all(b"x")
    return elapsed


def _measure(kits: Path, mode: str, task: str, amount: int) -> float:
    """Seconds for one bulk transfer or ``amount`` round trips with the receiver in a child."""
    spawn = mp.get_context("spawn")
    parent, child = spawn.Pipe()
    proc = spawn.Process(
        target=_receiver, args=(mode, task, str(kits / "server"), amount, child), daemon=True
    )
    proc.start()
    try:
        if not parent.poll(60):
            raise RuntimeError(f"{mode} receiver did not start")
        port = parent.recv()
        ctx = client_context(kits / "site-1")
        if mode == "blocking":
            return _blocking_sender(ctx, port, amount)
        return trio.run(_trio_sender, mode, ctx, port, task, amount)
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _median(kits: Path, mode: str, task: str, amount: int, repeat: int) -> float:
    return statistics.median(_measure(kits, mode, task, amount) for _ in range(repeat))


def run(quick: bool) -> list[Row]:
    nbytes = (128 if quick else 1024) * MiB
    rounds = 2000 if quick else 10000
    repeat = 3
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        root = Path(tmp)
        provision_local(root, "bench", ["site-1"], host="localhost")
        kits = root / "kits"
        bulk = {m: gbps(nbytes, _median(kits, m, "bulk", nbytes, repeat))
                for m in ("blocking", "sslstream", "tlsstream")}
        ping = {m: rounds / _median(kits, m, "ping", rounds, repeat)
                for m in ("sslstream", "tlsstream")}
    best_name = "blocking ssl" if bulk["blocking"] >= bulk["sslstream"] else "trio.SSLStream"
    best = max(bulk["blocking"], bulk["sslstream"])
    size = f"{nbytes // MiB} MiB"
    return [
        Row(GROUP, f"bulk {size}: blocking ssl socket", bulk["blocking"], "GB/s"),
        Row(GROUP, f"bulk {size}: stock trio.SSLStream", bulk["sslstream"], "GB/s",
            "blocking ssl socket", bulk["blocking"]),
        Row(GROUP, f"bulk {size}: TLSStream", bulk["tlsstream"], "GB/s",
            f"best raw TLS ({best_name})", best, ">= 0.9x"),
        Row(GROUP, "100 B ping-pong: TLSStream", ping["tlsstream"], "round trips/s",
            "trio.SSLStream ping-pong", ping["sslstream"], ">= 1.0x"),
    ]


if __name__ == "__main__":
    for row in run(quick=True):
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        print(f"{row.name:<40} {row.value:>12.3f} {row.unit:<14} {ratio} {row.target}")
