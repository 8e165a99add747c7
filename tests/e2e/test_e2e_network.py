"""e2e over real processes and mTLS: server, 2 sites, a job cell per site, embedded test cells."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio
from e2e_helpers import HOST, REPO, info, probe, stats, wait_peers

from cellnet.defs import ReturnCode
from cellnet.errors import IdentityMismatchError
from cellnet.node import NODE_CHANNEL, CellNode, NodeTopic
from cellnet.requests import REASON, Reason
from cellnet.transport import open_link_stream

ALL = ("server", "site-1", "site-2", "site-1.J1", "site-2.J1")


async def ready(kits, network, fqcn="site-2--t") -> CellNode:
    """A started probe (caller enters it) and a network whose links are all up."""
    return probe(kits / fqcn.split("--")[0].split(".")[0], fqcn, network["port"])


async def wait_all_up(node: CellNode) -> None:
    await node.wait_connected(timeout=20)
    await wait_peers(node, "server", {"site-1", "site-2"})
    await wait_peers(node, "site-1", {"site-1.J1"})
    await wait_peers(node, "site-2", {"site-2.J1"})


async def test_request_reply_to_every_cell(kits, network):
    async with await ready(kits, network) as node:
        await wait_all_up(node)
        for target in ALL:
            reply = await node.cell.send_request(
                target, NODE_CHANNEL, NodeTopic.ECHO, target.encode(), timeout=5
            )
            assert reply.return_code == "ok", reply
            assert bytes(reply.payload) == target.encode()
        doc = await info(node, "site-1.J1")
        assert doc["uplink"] == "site-1" and doc["pid"] != (await info(node, "site-1"))["pid"]


async def test_multi_hop_from_a_child_of_site_1_to_a_child_of_site_2(kits, network):
    async with await ready(kits, network) as node:
        await wait_all_up(node)
        child_port = (await info(node, "site-1"))["child_address"].rsplit(":", 1)[1]
        before = (await stats(node, "server"))["forwarded"]
        # a job-like cell of site-1 in this process, linked to site-1's local child port
        job = CellNode(kits / "site-1", "site-1.T1", connect=(HOST, int(child_port)),
                       reconnect=False)
        async with job:
            await job.wait_connected(timeout=10)
            reply = await job.cell.send_request(
                "site-2.J1", NODE_CHANNEL, NodeTopic.ECHO, b"across", timeout=5
            )
            assert reply.return_code == "ok" and bytes(reply.payload) == b"across"
            assert reply.origin == "site-2.J1"
        after = (await stats(node, "server"))["forwarded"]
        assert after >= before + 2  # the request and its reply both crossed the server


async def test_broadcast_with_an_absent_target(kits, network):
    async with await ready(kits, network) as node:
        await wait_all_up(node)
        targets = [*ALL, "site-3"]
        replies = await node.cell.broadcast_request(
            targets, NODE_CHANNEL, NodeTopic.ECHO, b"b", timeout=5
        )
        assert list(replies) == targets
        assert all(replies[t].return_code == "ok" for t in ALL)
        assert replies["site-3"].return_code == "comm_error"
        assert replies["site-3"].get_header(REASON) == Reason.NO_ROUTE
        ref = await node.cell.send_to_cell(targets, NODE_CHANNEL, NodeTopic.ECHO, b"r", 5)
        assert ref["site-3"].return_code == ReturnCode.COMMUNICATION_ERROR
        assert ref["site-1.J1"].return_code == ReturnCode.OK
        optional = await node.cell.broadcast_request(
            targets, NODE_CHANNEL, NodeTopic.ECHO, b"o", timeout=5, optional=True
        )
        assert "site-3" not in optional and len(optional) == len(ALL)


async def test_fire_and_forget_and_bulk_are_delivered(kits, network):
    async with await ready(kits, network) as node:
        await wait_all_up(node)
        for i in range(300):
            status = await node.cell.fire_and_forget(
                "site-2.J1", "e2e-bulk", "t", i.to_bytes(4, "big"), bulk=True
            )
            assert status == {"site-2.J1": "ok"}
        for _ in range(40):
            await node.cell.fire_and_forget(["site-1.J1", "site-2"], "e2e-fnf", "t", b"x")
        with trio.fail_after(10):
            while True:
                j2, s1, s2 = [await stats(node, t) for t in ("site-2.J1", "site-1.J1", "site-2")]
                counts = (
                    j2["channels"].get("e2e-bulk", {}).get("messages_in"),
                    s1["channels"].get("e2e-fnf", {}).get("messages_in"),
                    s2["channels"].get("e2e-fnf", {}).get("messages_in"),
                )
                if counts == (300, 40, 40):
                    break
                await trio.sleep(0.05)


async def test_unknown_target_and_unknown_topic(kits, network):
    async with await ready(kits, network) as node:
        await wait_all_up(node)
        lost = await node.cell.send_request("site-9.J1", NODE_CHANNEL, NodeTopic.ECHO, timeout=5)
        assert lost.return_code == "comm_error" and lost.get_header(REASON) == Reason.NO_ROUTE
        missing = await node.cell.send_request("site-1.J1", NODE_CHANNEL, "nope", timeout=5)
        assert missing.return_code == "invalid_request"
        assert missing.get_header(REASON) == Reason.TOPIC_UNKNOWN
        ref = await node.cell.send_to_cell("site-1.J1", NODE_CHANNEL, "nope", None, 5)
        assert ref["site-1.J1"].return_code == ReturnCode.TOPIC_UNKNOWN


async def test_handler_exception_answers_and_the_cell_keeps_serving(kits, network):
    async with await ready(kits, network) as caller, await ready(kits, network, "site-1--t") as t:
        def boom(msg):
            raise RuntimeError("test handler failed")

        t.cell.register_request_cb("e2e", "boom", boom)
        t.cell.register_request_cb("e2e", "fine", lambda msg: b"fine")
        await caller.wait_connected(timeout=20)
        await wait_peers(caller, "server", {"site-1--t", "site-2--t"})
        reply = await caller.cell.send_request("site-1--t", "e2e", "boom", timeout=5)
        assert reply.return_code == "process_exception"
        assert "test handler failed" in reply.error
        ref = await caller.cell.send_to_cell("site-1--t", "e2e", "boom", None, 5)
        assert ref["site-1--t"].return_code == ReturnCode.EXECUTION_EXCEPTION
        again = await caller.cell.send_request("site-1--t", "e2e", "fine", timeout=5)
        assert bytes(again.payload) == b"fine"


async def test_wrong_name_and_foreign_kit_are_refused_and_audited(kits, foreign_kits, network):
    port = network["port"]
    with pytest.raises(IdentityMismatchError) as wrong:
        await open_link_stream(HOST, port, kits / "site-1", my_fqcn="site-2",
                               expected_peer="server", timeout=5)
    assert wrong.value.by_peer
    foreign = subprocess.run(
        [sys.executable, "-m", "cellnet.cli", "run", str(foreign_kits / "site-1"), "--port",
         str(port), "--connect-timeout", "10", "--workspace", str(foreign_kits / "ws")],
        capture_output=True, text=True, timeout=30,
    )
    assert foreign.returncode == 4, foreign.stderr
    assert "authentication refused" in foreign.stderr
    audit_log = network["server"].workspace / "audit.log"
    with trio.fail_after(5):
        while "UnknownCAError" not in audit_log.read_text():
            await trio.sleep(0.05)
    text = audit_log.read_text()
    assert "auth-refused" in text and "site-2" in text and "IdentityMismatchError" in text
    assert "link-up peer=site-1 cn=site-1 org=org-1" in text


async def test_malformed_frame_closes_only_that_link(kits, network):
    async with await ready(kits, network) as node:
        await wait_all_up(node)
        bad = await open_link_stream(HOST, network["port"], kits / "site-1",
                                     my_fqcn="site-1--bad", expected_peer="server", timeout=5)
        await wait_peers(node, "server", {"site-1--bad"})
        await bad.stream.send_all(b"XXXX" + bytes(60))  # bad magic
        with trio.fail_after(5):
            try:
                while await bad.stream.receive_some(4096):
                    pass
            except trio.BrokenResourceError:
                pass
        await bad.stream.aclose()
        with trio.fail_after(5):
            while "site-1--bad" in (await info(node, "server"))["peers"]:
                await trio.sleep(0.05)
        for target in ALL:
            reply = await node.cell.send_request(target, NODE_CHANNEL, NodeTopic.ECHO, timeout=5)
            assert reply.return_code == "ok"
        log_text = (network["server"].workspace / "log.txt").read_text()
        assert "protocol error from peer" in log_text


def test_example_script_talks_to_server_and_site(kits, network):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "embed_cell.py"), str(kits / "site-1"),
         "--port", str(network["port"]), "--targets", "server", "site-1", "site-1.J1"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("site-1--probe linked to server")
    assert lines[1].startswith("server: echo='hello server'")
    assert lines[2].startswith("site-1: echo='hello site-1'")
    assert lines[3].startswith("site-1.J1: echo='hello site-1.J1'")
