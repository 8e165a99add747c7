"""Streams between two cells over a real TLSStream on loopback: the link decrypts chunks straight
into the receiver's buffer (``receive_into`` + the decoder's allocate hook), and a link cut
mid-stream frees everything."""

from __future__ import annotations

import numpy as np
import pytest
import trio
from transport_helpers import tls_pair

from cellnet.cell import Cell
from cellnet.defs import CellReturnCode
from cellnet.link import LinkConfig
from cellnet.stream import BufferSink
from cellnet.stream.sinks import same_memory

KiB, MiB = 1024, 1 << 20
CFG = LinkConfig(heartbeat_interval=None, idle_timeout=None, stream_threshold=512 * KiB,
                 stream_chunk=256 * KiB, stream_window=4)


@pytest.fixture
def placed(monkeypatch):
    seen: list[bool] = []
    real = BufferSink.write_checked

    def spy(self, offset, data, crc):
        seen.append(same_memory(self._buf[offset : offset + data.nbytes], data))
        real(self, offset, data, crc)

    monkeypatch.setattr(BufferSink, "write_checked", spy)
    return seen


async def _linked(server_ctx, client_ctx, server: Cell, site: Cell):
    c, s = await tls_pair(server_ctx, client_ctx)
    await site.add_link(c, "server")
    await server.add_link(s, "site-1")


async def test_model_streams_over_tls_into_place(server_ctx, client_ctx, placed):
    rng = np.random.default_rng(0)
    model = {f"l{i}": rng.standard_normal(200_000).astype(np.float32) for i in range(4)}
    with trio.fail_after(30):
        async with Cell("server", link_config=CFG) as server, \
                Cell("site-1", link_config=CFG) as site:
            got = {}

            def store(msg):
                got.update({k: np.array(v) for k, v in msg.payload.items()})
                return b"ok"

            server.register_request_cb("fl", "update", store)
            server.register_request_cb("fl", "ping", lambda m: bytes(m.payload))
            await _linked(server_ctx, client_ctx, server, site)
            async with trio.open_nursery() as nursery:
                pings = []

                async def ping():
                    for _ in range(5):
                        r = await site.send_request("server", "fl", "ping", b"p" * 100, 10.0)
                        pings.append(r.return_code)

                nursery.start_soon(ping)
                reply = await site.send_request("server", "fl", "update", model, 20.0)
            assert reply.return_code == CellReturnCode.OK, reply.headers
            assert pings == [CellReturnCode.OK] * 5
            for k, v in model.items():
                np.testing.assert_array_equal(got[k], v)
    total = sum(v.nbytes for v in model.values())
    assert len(placed) >= total // CFG.stream_chunk and all(placed)


async def test_link_cut_mid_stream_over_tls_frees_both_sides(server_ctx, client_ctx):
    with trio.fail_after(30):
        async with Cell("server", link_config=CFG) as server, \
                Cell("site-1", link_config=CFG) as site:
            server.register_request_cb("fl", "len", lambda m: b"%d" % len(m.payload))
            await _linked(server_ctx, client_ctx, server, site)
            rx = server.get_link("site-1").streams

            async def cut():
                while not rx.mux._in or next(iter(rx.mux._in.values())).progress[0] < MiB:
                    await trio.sleep(0.001)
                await site.get_link("server").stream.transport_stream.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cut)
                reply = await site.send_request("server", "fl", "len", b"x" * (8 * MiB), 20.0)
            assert reply.return_code == CellReturnCode.COMM_ERROR
            with trio.fail_after(5):
                while server.get_link("site-1") is not None:
                    await trio.sleep(0.01)
            assert rx.statistics()["incoming"] == 0 and rx.failed_in == 1
