"""e2e process lifecycle: re-linking after a server restart, port taken, SIGTERM, backpressure."""

from __future__ import annotations

import os
import signal
import socket
import sys

import pytest
import trio
from e2e_helpers import HOST, free_port, info, probe, stats, wait_peers

from cellnet.errors import LinkError, RouteError
from cellnet.link import LinkConfig
from cellnet.node import NODE_CHANNEL, CellNode, NodeTopic
from cellnet.transport import open_link_stream


async def test_site_relinks_after_the_server_process_restarts(kits, procs):
    port = free_port()
    server = procs.run(kits / "server", "--port", str(port), name="server")
    site = procs.run(kits / "site-1", "--port", str(port), "--job", "J1", name="site-1")
    async with probe(kits / "site-2", "site-2--watch", port) as node:
        await wait_peers(node, "server", {"site-1"})
        first_pid = (await info(node, "server"))["pid"]
        server.kill()  # SIGKILL: no goodbye, the site just loses the link
        again = procs.run(kits / "server", "--port", str(port), name="server-again")
        doc = await wait_peers(node, "server", {"site-1"}, timeout=30)
        assert doc["pid"] != first_pid
        reply = await node.cell.send_request("site-1.J1", NODE_CHANNEL, NodeTopic.ECHO, b"back",
                                             timeout=5)
        assert reply.return_code == "ok" and bytes(reply.payload) == b"back"
    site_log = (site.workspace / "log.txt").read_text()
    assert "link to server lost; reconnecting" in site_log
    assert "cannot reach server at" in site_log or site_log.count("linked to server") >= 2
    audit_log = (again.workspace / "audit.log").read_text()
    assert "link-up peer=site-1 cn=site-1" in audit_log


def test_port_taken_exits_2_naming_the_port(kits, procs):
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen()
        port = s.getsockname()[1]
        proc = procs.run(kits / "server", "--port", str(port), name="busy")
        assert proc.wait(30) == 2
    assert f"port {port} is already in use" in proc.err


def test_sigterm_stops_server_site_and_children_with_exit_0(kits, procs):
    port = free_port()
    server = procs.run(kits / "server", "--port", str(port), name="server")
    server.wait_for_output("running")
    site = procs.run(kits / "site-1", "--port", str(port), "--job", "J1", name="site-1")
    site.wait_for_output("cell site-1 running")  # the child's own "running" line comes first
    child_pid = int(site.out.split("child cell site-1.J1 linked (pid ")[1].split(")")[0])
    for proc in (site, server):
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0, proc.err
    assert "SIGTERM received, stopping" in (site.workspace / "log.txt").read_text()
    child_log = (site.workspace / "J1" / "log.txt").read_text()
    assert "cell site-1.J1 stopped" in child_log
    try:
        os.kill(child_pid, 0)
        raise AssertionError(f"child cell pid {child_pid} still alive")
    except ProcessLookupError:
        pass


async def test_backpressure_bounds_queued_bytes_to_a_peer_that_does_not_read(kits):
    bound = 256 * 1024
    server = CellNode(kits / "server", listen=(HOST, 0),
                      link_config=LinkConfig(max_queued_bytes=bound))
    async with server:
        # a raw peer that authenticates as site-1 and then never reads
        peer = await open_link_stream(*server.address, kits / "site-1", my_fqcn="site-1",
                                      expected_peer="server")
        try:
            await server.wait_for_peer("site-1", timeout=10)
            link = server.cell.get_link("site-1")
            payload = bytes(1024 * 1024)
            codes: list[str] = []
            peak = 0

            async def one() -> None:
                reply = await server.cell.send_request("site-1", "e2e", "sink", payload,
                                                       timeout=1.0)
                codes.append(reply.return_code)

            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(one)
                while len(codes) < 40:
                    peak = max(peak, link.queued_bytes)
                    await trio.sleep(0.01)
            assert set(codes) == {"timeout"}  # the peer never answers
            # most requests never got into the queue: the sender was held back ...
            assert link.frames_out < 40
            # ... and what was queued stayed within the bound (one frame may exceed it alone)
            assert 0 < peak <= len(payload) + bound + 4096
            assert not link.closed  # a slow peer is slowed down, not dropped
        finally:
            await peer.stream.aclose()


CUSTOM_CHILD = """
import trio
from cellnet.node import CellNode

async def main():
    async with CellNode.from_child_env() as node:
        node.cell.register_request_cb("e2e", "who", lambda m: b"custom " + node.fqcn.encode())
        await trio.sleep_forever()

trio.run(main)
"""


async def test_server_starts_child_cells_and_stops_them(kits, tmp_path):
    server = CellNode(kits / "server", listen=(HOST, 0), workspace=tmp_path / "ws")
    async with server:
        default = await server.start_child("J1", timeout=30)
        custom = await server.start_child("J2", [sys.executable, "-c", CUSTOM_CHILD], timeout=30)
        assert set(server.cell.peers) == {"server.J1", "server.J2"}
        reply = await server.cell.send_request("server.J1", NODE_CHANNEL, NodeTopic.ECHO, b"j1")
        assert bytes(reply.payload) == b"j1"
        reply = await server.cell.send_request("server.J2", "e2e", "who")
        assert bytes(reply.payload) == b"custom server.J2"
        assert server.info()["children"] == {"server.J1": default.pid, "server.J2": custom.pid}
        with pytest.raises(ValueError, match="already running"):
            await server.start_child("J1")
        with pytest.raises(LinkError, match="status 7"):
            await server.start_child("J3", [sys.executable, "-c", "raise SystemExit(7)"])
    assert default.returncode == 0  # SIGTERM: a clean stop
    assert custom.returncode is not None
    assert (tmp_path / "ws" / "J1" / "log.txt").is_file()


async def test_direct_link_between_site_processes_bypasses_the_server(kits, procs):
    port = free_port()
    procs.run(kits / "server", "--port", str(port), "--allow-p2p", name="server")
    site2 = procs.run(kits / "site-2", "--port", str(port), "--p2p-listen", f"{HOST}:0",
                      name="site-2")
    site2.wait_for_output("cell site-2 running")
    async with probe(kits / "site-1", "site-1--p2p", port, listen=(HOST, 0)) as node:
        await wait_peers(node, "server", {"site-1--p2p", "site-2"})
        with trio.fail_after(20):
            while True:  # site-2 publishes its endpoint right after linking
                try:
                    assert await node.connect_peer("site-2") == "site-2"
                    break
                except RouteError:
                    await trio.sleep(0.05)
        before = (await stats(node, "server"))["forwarded"]
        for i in range(3):
            reply = await node.cell.send_request("site-2", NODE_CHANNEL, NodeTopic.ECHO,
                                                 b"d%d" % i, timeout=5)
            assert reply.return_code == "ok" and bytes(reply.payload) == b"d%d" % i
        assert (await stats(node, "server"))["forwarded"] == before
        assert "site-1--p2p" in (await info(node, "site-2"))["peers"]
