"""CellNode in one process over real mutual TLS on 127.0.0.1: link, built-ins, re-link, refusals."""

from __future__ import annotations

import logging
import socket

import pytest
import trio

from cellnet.errors import AuthError, LinkError, UnknownCAError
from cellnet.node import NODE_CHANNEL, CellNode, NodeTopic, json_payload
from cellnet.transport import Backoff, open_link_stream

HOST = "127.0.0.1"


def fast_backoff() -> Backoff:
    return Backoff(base=0.01, cap=0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_node(kits) -> CellNode:
    return CellNode(kits / "server", listen=(HOST, 0))


def site_node(kits, server: CellNode, name: str = "site-1", fqcn: str | None = None, **kw):
    kw.setdefault("backoff", fast_backoff())
    return CellNode(kits / name, fqcn, connect=server.address, **kw)


async def test_site_links_to_server_and_builtins_answer(kits):
    async with server_node(kits) as server, site_node(kits, server) as site:
        assert server.address[0] == HOST and server.address[1] > 0
        with trio.fail_after(10):
            await site.wait_connected()
            await server.wait_for_peer("site-1")
        assert site.connected and server.connected
        echo = await site.cell.send_request("server", NODE_CHANNEL, NodeTopic.ECHO, b"ping")
        assert echo.return_code == "ok" and bytes(echo.payload) == b"ping"
        info = json_payload(await site.cell.send_request("server", NODE_CHANNEL, NodeTopic.INFO))
        assert info["fqcn"] == "server" and info["peers"] == ["site-1"]
        assert info["kind"] == "server" and info["listening"] == "{}:{}".format(*server.address)
        stats = json_payload(
            await server.cell.send_request("site-1", NODE_CHANNEL, NodeTopic.STATS)
        )
        assert stats["fqcn"] == "site-1"
        assert stats["channels"][NODE_CHANNEL]["messages_in"] >= 1


async def test_two_sites_and_an_agent_reach_each_other_through_the_server(kits):
    async with server_node(kits) as server:
        async with (
            site_node(kits, server) as s1,
            site_node(kits, server, "site-2") as s2,
            site_node(kits, server, "site-1", "site-1--probe") as probe,
        ):
            with trio.fail_after(10):
                for node in (s1, s2, probe):
                    await node.wait_connected()
            assert probe.uplink == "server"
            for target in ("site-1", "site-2", "server"):
                reply = await probe.cell.send_request(target, NODE_CHANNEL, NodeTopic.INFO)
                assert json_payload(reply)["fqcn"] == target
            assert sorted(server.cell.peers) == ["site-1", "site-1--probe", "site-2"]


async def test_site_relinks_after_the_link_drops(kits, caplog):
    caplog.set_level(logging.INFO, logger="cellnet.audit")
    async with server_node(kits) as server, site_node(kits, server) as site:
        with trio.fail_after(10):
            await server.wait_for_peer("site-1")
            first = server.cell.get_link("site-1")
            first.close("test drops the link")
            await first.finished.wait()
            while server.cell.get_link("site-1") in (None, first):
                await trio.sleep(0.01)
            await site.wait_connected()
        reply = await site.cell.send_request("server", NODE_CHANNEL, NodeTopic.ECHO, b"again")
        assert bytes(reply.payload) == b"again"
    downs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("link-down")]
    assert any("test drops the link" in m for m in downs)


async def test_connect_timeout_gives_up_with_link_error(kits):
    node = CellNode(kits / "site-1", connect=(HOST, free_port()), backoff=fast_backoff(),
                    connect_timeout=0.3)
    with trio.fail_after(10), pytest.raises(LinkError, match=r"unreachable for 0\.3 s"):
        async with node:
            await trio.sleep_forever()


async def test_foreign_kit_is_refused_and_not_retried(kits, foreign_kits, caplog):
    caplog.set_level(logging.INFO, logger="cellnet.audit")
    async with server_node(kits) as server:
        intruder = CellNode(foreign_kits / "site-1", connect=server.address,
                            backoff=fast_backoff())
        with trio.fail_after(10), pytest.raises(AuthError) as info:
            async with intruder:
                await trio.sleep_forever()
        assert isinstance(info.value, UnknownCAError) or info.value.by_peer
        assert server.cell.peers == ()
    assert any(r.getMessage().startswith("uplink-refused") for r in caplog.records)


async def test_child_port_admits_descendants_only(kits, caplog):
    caplog.set_level(logging.INFO, logger="cellnet.audit")
    async with server_node(kits) as server, site_node(kits, server) as site:
        host, port = await site.child_address()
        assert host == HOST
        assert await site.child_address() == (host, port)  # opened once
        # a cell of site-1 that is not below site-1 is refused on the child port
        peer = await open_link_stream(host, port, kits / "site-1", my_fqcn="site-1--x",
                                      expected_peer="site-1")
        with trio.fail_after(5):
            with pytest.raises(trio.BrokenResourceError):
                while await peer.stream.receive_some(1024):
                    pass
                raise trio.BrokenResourceError("closed")
        await peer.stream.aclose()
        assert "site-1--x" not in site.cell.peers
        # a descendant is linked under its FQCN
        job = CellNode(kits / "site-1", "site-1.J9", connect=(host, port), reconnect=False)
        async with job:
            with trio.fail_after(10):
                await job.wait_connected()
                await site.wait_for_peer("site-1.J9")
            reply = await server.cell.send_request("site-1.J9", NODE_CHANNEL, NodeTopic.INFO)
            assert json_payload(reply)["uplink"] == "site-1"
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("link-refused")]
    assert refused and "site-1--x" in refused[0] and "descendants" in refused[0]


async def test_child_node_stops_when_its_parent_link_ends(kits):
    async with server_node(kits) as server, site_node(kits, server) as site:
        _, port = await site.child_address()
        job = CellNode(kits / "site-1", "site-1.J2", connect=(HOST, port), reconnect=False)
        with trio.fail_after(10):
            async with job:
                await site.wait_for_peer("site-1.J2")
                site.cell.get_link("site-1.J2").close("parent goes away")
                await trio.sleep_forever()  # cancelled by the node when its uplink ends
        assert "site-1.J2" not in site.cell.peers


async def test_port_in_use_names_the_port(kits):
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen()
        port = s.getsockname()[1]
        node = CellNode(kits / "server", listen=(HOST, port))
        with pytest.raises(OSError, match=f"port {port} is already in use"):
            async with node:
                pass  # pragma: no cover
