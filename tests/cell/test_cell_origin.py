"""A peer may only send messages of its own site; only ancestors relay for everyone."""

from __future__ import annotations

import trio
from cell_helpers import federation

from cellnet.message import Message, MessageHeaderKey, MessageType
from cellnet.wire.codec import encode_message

K = MessageHeaderKey


def forged(origin: str, destination: str) -> list:
    msg = Message({
        K.CHANNEL.value: "c", K.TOPIC.value: "t", K.ORIGIN.value: origin,
        K.DESTINATION.value: destination, K.MSG_TYPE.value: MessageType.FIRE_AND_FORGET.value,
        K.HOP_COUNT.value: 0,
    }, b"x")
    return encode_message(msg)


async def test_a_site_cannot_originate_messages_for_another_site(caplog):
    got = []
    async with federation() as cells:
        cells["server"].register_request_cb("c", "t", got.append)
        site1 = cells["site-1"]
        link = site1.get_link("server")
        with trio.fail_after(5):
            await link.send(forged("site-2", "server"))  # site-1 pretends to be site-2
            await link.finished.wait()
        assert got == []
        assert "site-1" not in cells["server"].peers
        assert "may only send its own site's messages" in caplog.text
        # other links are untouched: site-2 still reaches the server
        reply = await cells["site-2"].send_request("server", "cellnet", "none", timeout=2)
        assert reply.return_code == "invalid_request"


async def test_own_site_origins_and_ancestor_relays_are_accepted():
    got = []
    async with federation() as cells:
        cells["server"].register_request_cb("c", "t", lambda m: got.append(m.origin))
        cells["site-1.J"].register_request_cb("c", "t", lambda m: got.append(m.origin))
        # site-1 passes on its job cell's message: same site, accepted by the server
        await cells["site-1"].get_link("server").send(forged("site-1.J", "server"))
        # the server (site-1's parent) relays anyone's message down to site-1.J
        await cells["server"].fire_and_forget("site-1.J", "c", "t", b"x")
        with trio.fail_after(5):
            while len(got) < 2:
                await trio.sleep(0.01)
        assert sorted(got) == ["server", "site-1.J"]
