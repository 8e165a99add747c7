"""The Cell's streaming API: receive into place, progress, chunk-by-chunk relays, limits,
cancellation from either side and link loss on a multi-hop route (small chunks and windows)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import trio
from cell_helpers import AGENT, federation

from cellnet._streaming import LinkStreams, stream_progress
from cellnet.defs import CellReturnCode
from cellnet.link import LinkConfig
from cellnet.message import Message
from cellnet.native import crc32c
from cellnet.stream import BufferSink, FileSink, Sink
from cellnet.stream import mux as mux_mod
from cellnet.stream.tensor_sink import FoldedUpdate, StreamAccumulator, TensorAccumulatorSink

OK = CellReturnCode.OK
KiB = 1024
CFG = LinkConfig(heartbeat_interval=None, idle_timeout=None, stream_threshold=32 * KiB,
                 stream_chunk=8 * KiB, stream_window=2)
EDGES2 = (("server", "site-1"),)


def blob(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((64, 100)).astype(np.float32),
            "b": rng.standard_normal(3000).astype(np.float32),
            "tiny": np.arange(5, dtype=np.float32)}


def streams(cell, peer) -> LinkStreams:
    return cell.get_link(peer).streams


def all_idle(cells) -> bool:
    for cell in cells.values():
        for peer in cell.peers:
            st = streams(cell, peer).statistics()
            if st["incoming"] or st["outgoing"] or st["waiting_senders"]:
                return False
    return True


@pytest.fixture
def opened(monkeypatch):
    """Sizes of every BufferSink opened (a whole payload reassembled somewhere)."""
    sizes: list[int] = []
    real = BufferSink.open

    def spy(self, info):
        sizes.append(info.size)
        real(self, info)

    monkeypatch.setattr(BufferSink, "open", spy)
    return sizes


@pytest.fixture
def relays(monkeypatch):
    """Every StreamRelay the muxes create."""
    made = []

    class Spy(mux_mod.StreamRelay):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(mux_mod, "StreamRelay", Spy)
    return made


async def test_relays_forward_chunk_by_chunk_never_reassembling(autojump_clock, opened, relays):
    async with federation(link_config=CFG) as cells:
        cells["server.J"].register_request_cb("ch", "echo", lambda m: bytes(m.payload))
        data = blob(300 * KiB, 1)
        reply = await cells[AGENT].send_request("server.J", "ch", "echo", data, 30.0)
        assert reply.return_code == OK, reply.headers
        assert bytes(reply.payload) == data
        # reassembled only at the two ends: the request at server.J, the reply at the agent
        assert opened == [len(data), len(data)]
        assert len(relays) == 6  # 3 relay cells x (request + reply)
        window = CFG.stream_chunk * CFG.stream_window
        assert all(r.done and r.error is None and 0 < r.max_pending <= window for r in relays)
        for relay in ("site-1.J", "site-1", "server"):
            assert cells[relay].statistics().forwarded == 2
        assert all_idle(cells)


async def test_link_lost_mid_relay_fails_the_request_and_frees_every_hop(autojump_clock,
                                                                      relays):
    async with federation(link_config=CFG) as cells:
        cells["server.J"].register_request_cb("ch", "echo", lambda m: bytes(m.payload))
        cut = cells["server"].get_link("server.J")

        async def cutter():
            while not relays or relays[0]._sent < 64 * KiB:
                await trio.sleep(0)
            cut.close("test cut")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cutter)
            reply = await cells[AGENT].send_request("server.J", "ch", "echo", blob(600 * KiB),
                                                    30.0)
        assert reply.return_code == CellReturnCode.COMM_ERROR, reply.headers
        await trio.sleep(1)
        assert all(r.done and r.error is not None and r.pending == 0 for r in relays)
        assert all_idle(cells)
        ok = await cells[AGENT].send_request("site-1", "ch", "nothing", b"x", 5.0)
        assert ok.return_code == CellReturnCode.INVALID_REQUEST  # the route still works


async def test_receive_into_place_aggregates_without_whole_copies(autojump_clock, opened):
    acc = StreamAccumulator()
    folded: list[FoldedUpdate] = []
    async with federation(("server", "site-1", "site-2"),
                          (("server", "site-1"), ("server", "site-2")), link_config=CFG) as cells:
        server = cells["server"]
        server.register_stream_sink("fl", "update", lambda info: TensorAccumulatorSink(
            acc, lambda info, meta: float(info.headers["weight"])))

        def on_update(msg):
            folded.append(msg.payload)
            return b"thanks"

        server.register_request_cb("fl", "update", on_update)
        updates = {"site-1": (model(1), 1.0), "site-2": (model(2), 3.0)}
        replies = {}

        async def send(site):
            cell = cells[site]
            tensors, weight = updates[site]
            msg = Message({"weight": weight}, tensors)
            replies[site] = await cell.send_request("server", "fl", "update", msg, 30.0)

        async with trio.open_nursery() as nursery:
            for site in updates:
                nursery.start_soon(send, site)
        assert all(r.return_code == OK and bytes(r.payload) == b"thanks"
                   for r in replies.values()), replies
        assert opened == []  # nothing was reassembled: folded as it arrived
        assert acc.count == 2 and all(isinstance(f, FoldedUpdate) for f in folded)
        got = acc.result()
        for name in model():
            want = (model(1)[name] * 1.0 + model(2)[name] * 3.0) / 4.0
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)


async def test_receive_into_a_file_and_progress_on_both_sides(autojump_clock, tmp_path):
    sent_progress: list[tuple[int, int]] = []
    recv_progress: list[tuple[int, int]] = []
    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        server = cells["server"]
        server.register_stream_sink(
            "files", "put", lambda info: FileSink(tmp_path / info.headers["name"]),
            on_progress=lambda info, done, total: recv_progress.append((done, total)))
        server.register_request_cb("files", "put", lambda m: str(m.payload).encode())
        data = blob(100 * KiB + 3, 2)
        with stream_progress(lambda done, total: sent_progress.append((done, total))):
            reply = await cells["site-1"].send_request(
                "server", "files", "put", Message({"name": "m.bin"}, data), 30.0)
        assert reply.return_code == OK, reply.headers
        assert bytes(reply.payload).decode() == str(tmp_path / "m.bin")
        assert (tmp_path / "m.bin").read_bytes() == data
        for seen in (sent_progress, recv_progress):
            assert len(seen) == -(-len(data) // CFG.stream_chunk)  # one report per chunk
            assert [d for d, _ in seen] == sorted(d for d, _ in seen)
            assert seen[-1] == (len(data), len(data))


async def test_progress_callback_errors_do_not_break_the_stream(autojump_clock):
    def boom(done, total):
        raise RuntimeError("progress bar broke")

    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        cells["server"].register_request_cb("ch", "len", lambda m: b"%d" % len(m.payload))
        with stream_progress(boom):
            reply = await cells["site-1"].send_request("server", "ch", "len", blob(64 * KiB), 9.0)
        assert reply.return_code == OK and bytes(reply.payload) == b"65536"
    with pytest.raises(TypeError):
        with stream_progress(42):  # type: ignore[arg-type]
            pass


async def test_over_size_limit_refused_others_unaffected(autojump_clock):
    cfg = dataclasses.replace(CFG, max_stream_size=100 * KiB)
    async with federation(("server", "site-1"), EDGES2, link_config=cfg) as cells:
        server, site = cells["server"], cells["site-1"]
        server.register_request_cb("ch", "len", lambda m: b"%d" % len(m.payload))
        results = {}

        async def go(name, data):
            results[name] = await site.send_request("server", "ch", "len", data, 30.0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(go, "big", blob(100 * KiB + 1))
            nursery.start_soon(go, "fits", blob(100 * KiB))
            nursery.start_soon(go, "small", b"abc")
        big = results["big"]
        assert big.return_code == CellReturnCode.COMM_ERROR
        assert "limit" in big.headers.get("cellnet.error", ""), big.headers
        assert bytes(results["fits"].payload) == b"102400"
        assert bytes(results["small"].payload) == b"3"
        assert not site.get_link("server").closed


async def test_concurrent_stream_limit_per_peer(autojump_clock):
    cfg = dataclasses.replace(CFG, max_streams_per_peer=1)
    async with federation(("server", "site-1"), EDGES2, link_config=cfg) as cells:
        server, site = cells["server"], cells["site-1"]
        server.register_request_cb("ch", "len", lambda m: b"%d" % len(m.payload))
        codes = []

        async def go(i):
            r = await site.send_request("server", "ch", "len", blob(200 * KiB, i), 30.0)
            codes.append(r.return_code)

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(go, i)
        assert codes.count(OK) >= 1 and CellReturnCode.COMM_ERROR in codes
        assert streams(server, "site-1").failed_in == codes.count(CellReturnCode.COMM_ERROR)
        again = await site.send_request("server", "ch", "len", blob(200 * KiB), 30.0)
        assert again.return_code == OK  # the limit is on streams at once, not in total


class _Hoarder(Sink):
    """Keeps every byte 'pending' (never lets the sender past the first window)."""

    def __init__(self):
        self.pending = 0
        self.aborted = False

    def write(self, offset, data):
        self.pending += data.nbytes
        return _crc(data)

    def abort(self):
        self.aborted = True


def _crc(data):
    return crc32c(data)


async def test_sender_gives_up_mid_stream_receiver_frees(autojump_clock):
    sinks: list[_Hoarder] = []

    def factory(info):
        sinks.append(_Hoarder())
        return sinks[-1]

    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        server, site = cells["server"], cells["site-1"]
        server.register_stream_sink("ch", "slow", factory)
        server.register_request_cb("ch", "slow", lambda m: b"never")
        reply = await site.send_request("server", "ch", "slow", blob(200 * KiB), 2.0)
        assert reply.return_code == CellReturnCode.TIMEOUT
        await trio.sleep(1)
        assert sinks and sinks[0].aborted  # the sender's RESET reached the receiver
        assert all_idle(cells)


class _Refuser(Sink):
    def write(self, offset, data):
        if offset >= 16 * KiB:
            raise OSError("disk full")
        return _crc(data)


async def test_receiver_cancels_mid_stream_sender_sees_error(autojump_clock):
    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        server, site = cells["server"], cells["site-1"]
        server.register_stream_sink("ch", "put", lambda info: _Refuser())
        server.register_request_cb("ch", "put", lambda m: b"stored")
        server.register_request_cb("ch", "echo", lambda m: bytes(m.payload))
        reply = await site.send_request("server", "ch", "put", blob(200 * KiB), 30.0)
        assert reply.return_code == CellReturnCode.COMM_ERROR
        assert "disk full" in reply.headers.get("cellnet.error", ""), reply.headers
        small = await site.send_request("server", "ch", "echo", b"still here", 5.0)
        assert bytes(small.payload) == b"still here"
        assert all_idle(cells)


async def test_a_sink_factory_that_raises_refuses_the_stream(autojump_clock):
    def factory(info):
        raise ValueError("no room for that")

    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        cells["server"].register_stream_sink("ch", "put", factory)
        cells["server"].register_request_cb("ch", "put", lambda m: b"ok")
        reply = await cells["site-1"].send_request("server", "ch", "put", blob(64 * KiB), 9.0)
        assert reply.return_code == CellReturnCode.COMM_ERROR
        assert "no room for that" in reply.headers.get("cellnet.error", "")


async def test_register_stream_sink_checks_its_arguments(autojump_clock):
    async with federation(("server",), (), link_config=CFG) as cells:
        server = cells["server"]
        with pytest.raises(TypeError):
            server.register_stream_sink("ch", "t", factory=42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            server.register_stream_sink("ch", "t", on_progress="x")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            server.register_stream_sink("", "t")
        server.register_stream_sink("ch", "t")
        server.unregister_stream_sink("ch", "t")
        server.unregister_stream_sink("ch", "t")  # idempotent


async def test_released_receive_buffers_are_reused(autojump_clock):
    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        server = cells["server"]
        server.stream_buffers.min_bytes = 32 * KiB
        server.register_request_cb("ch", "len", lambda m: b"%d" % len(m.payload))
        for i in range(3):
            r = await cells["site-1"].send_request("server", "ch", "len", blob(100 * KiB, i), 9.)
            assert r.return_code == OK
        assert server.stream_buffers.reused == 2


async def test_a_relayed_stream_with_a_forged_origin_closes_that_link_only(autojump_clock,
                                                                          relays):
    from cellnet.errors import LinkClosedError
    from cellnet.message import MessageHeaderKey as K

    got = []
    async with federation(link_config=CFG) as cells:
        cells["server.J"].register_request_cb("c", "t", got.append)
        forged = Message({K.CHANNEL.value: "c", K.TOPIC.value: "t", K.ORIGIN.value: "site-2",
                          K.DESTINATION.value: "server.J", K.HOP_COUNT.value: 0,
                          K.MSG_TYPE.value: "fire_and_forget"}, blob(100 * KiB))
        with pytest.raises(LinkClosedError):
            await streams(cells["site-1"], "server").send(forged, 10.0)
        assert got == [] and relays == []  # refused before anything was passed on
        assert "site-1" not in cells["server"].peers
        reply = await cells["site-2"].send_request("server.J", "c", "t", blob(64 * KiB), 9.0)
        assert reply.return_code == OK and len(got) == 1  # others still stream through


async def test_concurrent_relayed_streams_and_small_requests_share_the_route(autojump_clock,
                                                                           relays):
    async with federation(link_config=CFG) as cells:
        cells["server.J"].register_request_cb("ch", "len", lambda m: b"%d" % len(m.payload))
        cells["server.J"].register_request_cb("ch", "echo", lambda m: bytes(m.payload))
        agent = cells[AGENT]
        big, small = {}, []

        async def send_big(i):
            data = blob(150 * KiB + i * 999, i)
            big[i] = (len(data), await agent.send_request("server.J", "ch", "len", data, 60.0))

        async def send_small(i):
            small.append(await agent.send_request("server.J", "ch", "echo", b"%d" % i, 60.0))

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(send_big, i)
            for i in range(10):
                nursery.start_soon(send_small, i)
        assert all(r.return_code == OK and bytes(r.payload) == b"%d" % n
                   for n, r in big.values()), big
        assert sorted(bytes(r.payload) for r in small) == sorted(b"%d" % i for i in range(10))
        assert len(relays) == 12 and all(r.error is None for r in relays)  # 4 x 3 relay cells
        assert all_idle(cells)
