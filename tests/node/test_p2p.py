"""Direct peer-to-peer links on demand: endpoint registry policy, lookup, routing preference."""

from __future__ import annotations

import pytest
import trio

from cellnet.errors import RouteError
from cellnet.node import NODE_CHANNEL, CellNode, NodeTopic, _p2p
from cellnet.transport import Backoff

HOST = "127.0.0.1"


def _site(kits, server: CellNode, name: str, **kw) -> CellNode:
    return CellNode(kits / name, connect=server.address, listen=(HOST, 0),
                    backoff=Backoff(base=0.01, cap=0.05), **kw)


async def _published(server: CellNode, *names: str) -> None:
    with trio.fail_after(10):
        while not set(names) <= set(server.registry.endpoints):
            await trio.sleep(0.01)


async def test_direct_link_is_opened_on_demand_and_preferred(kits):
    async with CellNode(kits / "server", listen=(HOST, 0), allow_p2p=True) as server:
        async with _site(kits, server, "site-1") as s1, _site(kits, server, "site-2") as s2:
            await _published(server, "site-1", "site-2")
            assert server.registry.endpoints["site-2"] == s2.address
            relayed = server.cell.statistics().forwarded
            reply = await s1.cell.send_request("site-2", NODE_CHANNEL, NodeTopic.ECHO, b"via")
            assert bytes(reply.payload) == b"via"
            assert server.cell.statistics().forwarded > relayed  # went through the server

            assert await s1.connect_peer("site-2") == "site-2"
            assert "site-2" in s1.cell.peers
            with trio.fail_after(10):
                await s2.wait_for_peer("site-1")
            before = server.cell.statistics().forwarded
            for _ in range(5):
                reply = await s1.cell.send_request("site-2", NODE_CHANNEL, NodeTopic.ECHO, b"d")
                assert reply.return_code == "ok" and bytes(reply.payload) == b"d"
            assert server.cell.statistics().forwarded == before  # the server saw none of it
            # a second call finds the link and opens nothing new
            link = s1.cell.get_link("site-2")
            assert await s1.connect_peer("site-2.J7") == "site-2"
            assert s1.cell.get_link("site-2") is link


async def test_server_policy_refuses_direct_links_by_default(kits):
    async with CellNode(kits / "server", listen=(HOST, 0)) as server:
        async with _site(kits, server, "site-1") as s1, _site(kits, server, "site-2"):
            with trio.fail_after(10):
                await server.wait_for_peer("site-2")
            with pytest.raises(RouteError, match="not allowed"):
                await s1.connect_peer("site-2")
            assert server.registry.endpoints == {}
            assert "site-2" not in s1.cell.peers


async def test_lookup_without_a_listening_cell_on_the_path_is_a_route_error(kits):
    async with CellNode(kits / "server", listen=(HOST, 0), allow_p2p=True) as server:
        plain = CellNode(kits / "site-2", connect=server.address,
                         backoff=Backoff(base=0.01, cap=0.05))  # does not listen
        async with _site(kits, server, "site-1") as s1, plain:
            await _published(server, "site-1")
            with trio.fail_after(10):
                await plain.wait_connected()
            with pytest.raises(RouteError, match="no cell on the path"):
                await s1.connect_peer("site-2.J1")


async def test_a_cell_cannot_register_an_endpoint_for_another(kits):
    async with CellNode(kits / "server", listen=(HOST, 0), allow_p2p=True) as server:
        async with _site(kits, server, "site-1") as s1:
            await _published(server, "site-1")
            body = b'{"fqcn": "site-2", "host": "127.0.0.1", "port": 9}'
            reply = await s1.cell.send_request("server", NODE_CHANNEL, _p2p.REGISTER, body)
            assert reply.return_code == "process_exception"
            assert "may register only itself" in (reply.error or "")
            assert "site-2" not in server.registry.endpoints
            bad = b'{"fqcn": "site-1", "host": "127.0.0.1", "port": 70000}'
            reply = await s1.cell.send_request("server", NODE_CHANNEL, _p2p.REGISTER, bad)
            assert reply.return_code == "process_exception"
            assert server.registry.endpoints["site-1"] == s1.address
