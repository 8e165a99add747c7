"""The two processes of bench_bigmodel.py: a ``server`` cell receiving models, a ``site-1`` sending.

Both are started with ``multiprocessing`` (spawn) and report over a pipe,
including their own peak RSS (``resource.getrusage`` maxrss) beside the peak
they had before the transfers began, so each side's memory is its own.

* :func:`server_main` listens with ``serve_links`` and serves ``bench``
  topics: ``ping`` (echo), ``model`` (a whole model reassembled into one
  buffer and decoded zero-copy) and ``update`` (received into place: a
  ``TensorAccumulatorSink`` folds each arriving tensor into one running
  ``StreamAccumulator``, so 8 updates need about one model of memory).
* :func:`site_main` connects over mutual TLS, builds the float32 model and
  runs one task: ``"send"`` (timed sends of the model, then one more with
  100-byte requests probing the same link's latency while it is in flight) or
  ``"aggregate"`` (8 concurrent updates of the model to ``update``).
"""

from __future__ import annotations

import functools
import resource
import statistics
import time

import numpy as np
import trio

from cellnet.cell import Cell
from cellnet.stream.tensor_sink import StreamAccumulator, TensorAccumulatorSink
from cellnet.transport import open_link_stream, serve_links

HOST = "127.0.0.1"
CHANNEL = "bench"
MiB = 1 << 20


def peak_rss() -> int:
    """This process's peak resident set size so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_model(total: int, n_tensors: int) -> dict[str, np.ndarray]:
    """``n_tensors`` float32 arrays of ``total`` bytes in all (touched, so resident)."""
    per = total // n_tensors // 4
    return {f"layer{i:03d}.weight": np.full(per, float(i), np.float32) for i in range(n_tensors)}


# ---- the server ------------------------------------------------------------------


async def _server(kit: str, conn, n_tensors: int) -> None:
    base = peak_rss()
    acc = StreamAccumulator()
    async with Cell("server") as cell, trio.open_nursery() as nursery:

        async def ping(msg):
            return msg.payload

        async def model(msg):
            pack = msg.payload
            assert len(pack) == n_tensors, len(pack)
            return str(sum(a.nbytes for a in pack.values())).encode()

        async def update(msg):
            folded = msg.payload  # a FoldedUpdate: the tensors are already in ``acc``
            return f"{len(folded.names)} {acc.count}".encode()

        cell.register_request_cb(CHANNEL, "ping", ping)
        cell.register_request_cb(CHANNEL, "model", model)
        cell.register_request_cb(CHANNEL, "update", update)
        cell.register_stream_sink(CHANNEL, "update", lambda info: TensorAccumulatorSink(acc, 1.0))

        async def on_link(stream, identity, fqcn) -> None:
            link = await cell.add_link(stream, fqcn)
            await link.finished.wait()

        listeners = await nursery.start(functools.partial(serve_links, on_link, kit, port=0))
        conn.send(listeners[0].socket.getsockname()[1])
        await trio.to_thread.run_sync(conn.recv)  # the bench says stop
        conn.send({"base": base, "peak": peak_rss(), "folded": acc.count})
        nursery.cancel_scope.cancel()


def server_main(kit: str, conn, n_tensors: int) -> None:
    trio.run(_server, kit, conn, n_tensors)


# ---- the site --------------------------------------------------------------------


async def _send(site: Cell, topic: str, model) -> float:
    t0 = time.perf_counter()
    reply = await site.send_request("server", CHANNEL, topic, model, timeout=600.0)
    assert reply.return_code == "ok", (reply.return_code, reply.headers)
    return time.perf_counter() - t0


async def _probe_latency(site: Cell, model) -> list[float]:
    """Seconds per 100-byte request while one more model is streamed on the same link."""
    done = trio.Event()
    lat: list[float] = []
    payload = b"p" * 100

    async def big() -> None:
        await _send(site, "model", model)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(big)
        await trio.sleep(0.02)  # let the stream get going
        while not done.is_set():
            t0 = time.perf_counter()
            reply = await site.send_request("server", CHANNEL, "ping", payload, timeout=30.0)
            lat.append(time.perf_counter() - t0)
            assert reply.return_code == "ok", reply.return_code
            await trio.sleep(0.002)
    return lat


async def _site(kit: str, port: int, conn, task: str, total: int, n_tensors: int,
                repeat: int, n_updates: int) -> None:
    base = peak_rss()
    model = make_model(total, n_tensors)
    out: dict = {"base": base}
    async with Cell("site-1") as site:
        peer = await open_link_stream(HOST, port, kit, my_fqcn="site-1", expected_peer="server")
        await site.add_link(peer.stream, peer.fqcn)
        for _ in range(20):
            reply = await site.send_request("server", CHANNEL, "ping", b"w", timeout=30.0)
            assert reply.return_code == "ok", reply.return_code
        if task == "send":
            out["times"] = [await _send(site, "model", model) for _ in range(repeat)]
            out["latency"] = await _probe_latency(site, model)
        else:
            times: list[float] = []
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(n_updates):
                    nursery.start_soon(lambda: _collect(times, _send(site, "update", model)))
            out["times"] = [time.perf_counter() - t0]
        out["peak"] = peak_rss()
    conn.send(out)


async def _collect(into: list, coro) -> None:
    into.append(await coro)


def site_main(kit: str, port: int, conn, task: str, total: int, n_tensors: int,
              repeat: int, n_updates: int) -> None:
    trio.run(_site, kit, port, conn, task, total, n_tensors, repeat, n_updates)


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; the median for one value."""
    if len(values) < 2:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
