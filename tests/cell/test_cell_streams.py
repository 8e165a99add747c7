"""Large messages through in-process cells travel as chunked streams: round trips, interleaving,
relays, link loss and corrupt chunks (small thresholds and chunks, many chunks per message)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import trio
from cell_helpers import AGENT, federation

from cellnet._streaming import LinkStreams, is_large
from cellnet.defs import CellReturnCode
from cellnet.link import LinkConfig
from cellnet.stream._proto import K_CRC
from cellnet.wire import FrameType

OK = CellReturnCode.OK
KiB = 1024
CFG = LinkConfig(heartbeat_interval=None, idle_timeout=None,
                 stream_threshold=64 * KiB, stream_chunk=16 * KiB)
EDGES2 = (("server", "site-1"),)


def blob(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def echo(msg):
    return bytes(msg.payload)


def streams(cell, peer) -> LinkStreams:
    return cell.get_link(peer).streams


async def test_bytes_request_reply_round_trip_as_streams(autojump_clock):
    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        cells["server"].register_request_cb("ch", "echo", echo)
        link = cells["site-1"].get_link("server")
        data = blob(300 * KiB + 7)
        before = link.frames_out
        reply = await cells["site-1"].send_request("server", "ch", "echo", data, 10.0)
        assert reply.return_code == OK, reply.headers
        assert bytes(reply.payload) == data
        assert link.frames_out - before >= 300 // 16  # one frame per chunk, not one frame
        back = cells["server"].get_link("site-1")
        assert back.frames_out >= 300 // 16  # the reply streamed too
        for cell, peer in ((cells["site-1"], "server"), (cells["server"], "site-1")):
            st = streams(cell, peer).statistics()
            assert st["outgoing"] == st["incoming"] == st["waiting_senders"] == 0


async def test_small_payloads_stay_single_frames(autojump_clock):
    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        cells["server"].register_request_cb("ch", "echo", echo)
        link = cells["site-1"].get_link("server")
        assert not is_large(link, b"x" * (64 * KiB)) and is_large(link, b"x" * (64 * KiB + 1))
        before = link.frames_out
        reply = await cells["site-1"].send_request("server", "ch", "echo", b"x" * 1000, 5.0)
        assert bytes(reply.payload) == b"x" * 1000
        assert link.frames_out - before == 1


async def test_tensor_dict_round_trip_zero_copy(autojump_clock):
    rng = np.random.default_rng(1)
    tensors = {"w": rng.standard_normal((128, 300)).astype(np.float32),
               "b": rng.standard_normal(333).astype(np.float64),
               "i": np.arange(5000, dtype=np.int32)}

    def double(msg):
        assert isinstance(msg.payload["w"], np.ndarray)
        return {k: v * 2 for k, v in msg.payload.items()}

    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        cells["server"].register_request_cb("ch", "double", double)
        reply = await cells["site-1"].send_request("server", "ch", "double", tensors, 10.0)
        assert reply.return_code == OK, reply.headers
        assert set(reply.payload) == set(tensors)
        for k, v in tensors.items():
            got = reply.payload[k]
            assert got.dtype == v.dtype and got.shape == v.shape
            np.testing.assert_array_equal(got, v * 2)


async def test_concurrent_streams_and_small_requests_interleave(autojump_clock):
    order: list[str] = []
    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        site, server = cells["site-1"], cells["server"]
        server.register_request_cb("ch", "echo", echo)
        server.register_request_cb("ch", "len", lambda m: str(len(bytes(m.payload))).encode())
        payloads = [blob(1024 * KiB, seed) for seed in range(4)]

        async def big(i):
            r = await site.send_request("server", "ch", "len", payloads[i], 30.0)
            assert r.return_code == OK and bytes(r.payload) == str(len(payloads[i])).encode()
            order.append(f"big{i}")

        async def small(i):
            r = await site.send_request("server", "ch", "echo", b"s%d" % i, 30.0)
            assert r.return_code == OK and bytes(r.payload) == b"s%d" % i
            order.append(f"small{i}")

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(big, i)
            while streams(site, "server").statistics()["outgoing"] < 4:
                await trio.sleep(0)
            for i in range(10):
                nursery.start_soon(small, i)
        assert sorted(order) == sorted([f"big{i}" for i in range(4)] +
                                       [f"small{i}" for i in range(10)])
        # every small request finished while the big ones were still streaming
        last_small = max(order.index(f"small{i}") for i in range(10))
        first_big = min(order.index(f"big{i}") for i in range(4))
        assert last_small < first_big, order


async def test_relay_through_middle_cells(autojump_clock):
    async with federation(link_config=CFG) as cells:
        cells["server.J"].register_request_cb("ch", "echo", echo)
        data = blob(200 * KiB, 3)
        reply = await cells[AGENT].send_request("server.J", "ch", "echo", data, 10.0)
        assert reply.return_code == OK, reply.headers
        assert bytes(reply.payload) == data
        for relay in ("site-1.J", "site-1", "server"):  # request + reply relayed
            assert cells[relay].statistics().forwarded == 2


async def test_fire_and_forget_large_payload(autojump_clock):
    got = []
    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        cells["server"].register_request_cb("ch", "put", lambda m: got.append(bytes(m.payload)))
        data = blob(100 * KiB, 4)
        status = await cells["site-1"].fire_and_forget("server", "ch", "put", data)
        assert status == {"server": "ok"}
        with trio.fail_after(5):
            while not got:
                await trio.sleep(0.01)
        assert got == [data]


async def test_link_closed_mid_stream_is_comm_error_and_frees(autojump_clock):
    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        site, server = cells["site-1"], cells["server"]
        server.register_request_cb("ch", "echo", echo)
        link = site.get_link("server")
        rx = streams(server, "site-1")
        tx = streams(site, "server")

        async def cut():
            while rx.statistics()["incoming"] < 1 or rx.mux._in[next(iter(rx.mux._in))].progress[
                    0] < 64 * KiB:
                await trio.sleep(0)
            link.close("test cut")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cut)
            reply = await site.send_request("server", "ch", "echo", blob(2048 * KiB), 10.0)
        assert reply.return_code == CellReturnCode.COMM_ERROR, reply.headers
        await trio.sleep(0.1)
        assert rx.statistics()["incoming"] == 0 and rx.failed_in == 1  # partial buffer dropped
        st = tx.statistics()
        assert st["outgoing"] == 0 and st["waiting_senders"] == 0
        assert server.get_link("site-1") is None


async def test_corrupt_chunk_resets_that_stream_only(autojump_clock):
    async with federation(("server", "site-1"), EDGES2, link_config=CFG) as cells:
        site, server = cells["site-1"], cells["server"]
        server.register_request_cb("ch", "echo", echo)
        mux = streams(site, "server").mux
        real_next = mux.next_frame
        tampered = []

        def corrupting_next():  # flips the CRC header of the first chunk of the first stream
            frame = real_next()
            if frame is not None and frame.type is FrameType.STREAM_DATA and not tampered:
                tampered.append(frame)
                frame = dataclasses.replace(
                    frame, headers={**frame.headers, K_CRC: frame.headers[K_CRC] ^ 1})
            return frame

        mux.next_frame = corrupting_next
        data = blob(100 * KiB, 6)
        async with trio.open_nursery() as nursery:  # a small request alongside is unaffected
            small = []

            async def one_small():
                small.append(await site.send_request("server", "ch", "echo", b"hi", 10.0))

            nursery.start_soon(one_small)
            bad = await site.send_request("server", "ch", "echo", data, 10.0)
        assert tampered and bad.return_code == CellReturnCode.COMM_ERROR
        assert small[0].return_code == OK and bytes(small[0].payload) == b"hi"
        assert streams(server, "site-1").failed_in == 1
        assert not site.get_link("server").closed
        reply = await site.send_request("server", "ch", "echo", data, 10.0)
        assert reply.return_code == OK and bytes(reply.payload) == data


@pytest.mark.parametrize("field", ["stream_threshold", "stream_chunk", "stream_window",
                                   "max_stream_size", "max_streams_per_peer"])
def test_link_config_rejects_bad_stream_settings(field):
    with pytest.raises(ValueError, match=field):
        LinkConfig(**{field: 0})
