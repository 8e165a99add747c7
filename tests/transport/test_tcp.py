"""TCP links: listen/connect over mutual TLS, the HELLO identity check, and setup failures."""

from __future__ import annotations

import logging
import socket
from functools import partial

import pytest
import trio
from transport_helpers import HOST

from cellnet.errors import (
    CertificateExpiredError,
    FQCNError,
    IdentityMismatchError,
    LinkError,
    UnknownCAError,
)
from cellnet.security import client_context
from cellnet.transport import PROTOCOL_VERSION, TLSStream, open_link_stream, serve_links
from cellnet.transport.tcp import _receive_setup_frame
from cellnet.wire import FrameType, encode_frame


async def echo(stream, identity, fqcn):
    while data := await stream.receive_some():
        await stream.send_all(data)


async def start_server(nursery, kits, handler=echo, **kw) -> int:
    listeners = await nursery.start(
        partial(serve_links, handler, kits / "server", host=HOST, port=0, **kw)
    )
    return listeners[0].socket.getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


async def test_link_up_identities_and_echo(kits):
    seen = []

    async def handler(stream, identity, fqcn):
        seen.append((identity.name, identity.kind, fqcn))
        await echo(stream, identity, fqcn)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, kits, handler)
            link = await open_link_stream(
                HOST, port, kits / "site-1", my_fqcn="site-1.job7", expected_peer="server"
            )
            async with link.stream as stream:
                assert (link.fqcn, link.identity.name) == ("server", "server")
                raw = stream.transport_stream
                assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                await stream.send_all(b"hello link")
                assert await stream.receive_some(100) == b"hello link"
            nursery.cancel_scope.cancel()
    assert seen == [("site-1", "site", "site-1.job7")]


async def test_bytes_sent_right_after_hello_reach_the_handler(kits):
    got = []

    async def handler(stream, identity, fqcn):
        data = bytearray()
        while chunk := await stream.receive_some():
            data += chunk
        got.append(bytes(data))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, kits, handler)
            raw = await trio.open_tcp_stream(HOST, port)
            stream = TLSStream(raw, client_context(kits / "site-2"), server_hostname="localhost")
            hello = encode_frame(FrameType.HELLO, {"fqcn": "site-2", "version": PROTOCOL_VERSION})
            await stream.send_segments([*hello, b"first app bytes"])
            reply = await _receive_setup_frame(stream)
            assert reply.type is FrameType.HELLO and reply.headers["fqcn"] == "server"
            await stream.aclose()
            while not got:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert got == [b"first app bytes"]


async def test_announcing_another_site_is_refused_and_logged(kits, caplog):
    called, refused = [], []

    async def handler(*args):
        called.append(args)

    def on_refused(address, exc):
        refused.append((address, exc))

    with trio.fail_after(10), caplog.at_level(logging.WARNING, "cellnet.transport.tcp"):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, kits, handler, on_refused=on_refused)
            with pytest.raises(IdentityMismatchError, match="site-2") as info:
                await open_link_stream(HOST, port, kits / "site-1", my_fqcn="site-2")
            assert info.value.by_peer
            nursery.cancel_scope.cancel()
    assert not called
    assert "refused link" in caplog.text and "IdentityMismatchError" in caplog.text
    assert len(refused) == 1 and refused[0][0].startswith("127.0.0.1:")
    assert isinstance(refused[0][1], IdentityMismatchError)


async def test_client_checks_expected_peer(kits):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, kits)
            with pytest.raises(IdentityMismatchError, match=r"expected 'server\.job1'") as info:
                await open_link_stream(
                    HOST, port, kits / "site-1", my_fqcn="site-1", expected_peer="server.job1"
                )
            assert not info.value.by_peer
            with pytest.raises(FQCNError):
                await open_link_stream(HOST, port, kits / "site-1", my_fqcn="bad name")
            nursery.cancel_scope.cancel()


async def test_expired_client_certificate(kits, expired_site_kit, caplog):
    with trio.fail_after(10), caplog.at_level(logging.WARNING, "cellnet.transport.tcp"):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, kits)
            with pytest.raises(CertificateExpiredError) as info:
                await open_link_stream(HOST, port, expired_site_kit, my_fqcn="site-1")
            assert info.value.by_peer
            nursery.cancel_scope.cancel()
    assert "CertificateExpiredError" in caplog.text


async def test_certificate_from_another_ca(kits, other_kits):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, kits)
            with pytest.raises(UnknownCAError):
                await open_link_stream(HOST, port, other_kits / "site-1", my_fqcn="site-1")
            nursery.cancel_scope.cancel()


async def test_port_in_use_names_the_port(kits):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, kits)
            with pytest.raises(OSError, match=f"port {port} is already in use"):
                await serve_links(echo, kits / "server", host=HOST, port=port)
            nursery.cancel_scope.cancel()


async def test_unreachable_server_is_a_clear_link_error(kits):
    port = free_port()
    with trio.fail_after(10), pytest.raises(LinkError, match=f"cannot reach {HOST}:{port}"):
        await open_link_stream(HOST, port, kits / "site-1", my_fqcn="site-1")


async def test_silent_server_times_out(kits):
    async def mute(stream):
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, mute, 0, host=HOST))
            port = listeners[0].socket.getsockname()[1]
            with pytest.raises(LinkError, match=r"timed out after 0\.2s in the TLS handshake"):
                await open_link_stream(HOST, port, kits / "site-1", my_fqcn="site-1", timeout=0.2)
            nursery.cancel_scope.cancel()


async def test_silent_client_is_dropped_after_handshake_timeout(kits, caplog):
    with trio.fail_after(10), caplog.at_level(logging.WARNING, "cellnet.transport.tcp"):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, kits, handshake_timeout=0.2)
            async with await trio.open_tcp_stream(HOST, port) as raw:
                assert await raw.receive_some(100) == b""  # the server gave up on us
            nursery.cancel_scope.cancel()
    assert "TooSlowError" in caplog.text


async def test_wrong_protocol_version_gets_goaway(kits):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, kits)
            raw = await trio.open_tcp_stream(HOST, port)
            ctx = client_context(kits / "site-1")
            async with TLSStream(raw, ctx, server_hostname="localhost") as stream:
                await stream.send_segments(
                    encode_frame(FrameType.HELLO, {"fqcn": "site-1", "version": 99})
                )
                reply = await _receive_setup_frame(stream)
                assert reply.type is FrameType.GOAWAY
                assert reply.headers["reason"] == "protocol"
                assert "99" in reply.headers["detail"]
            nursery.cancel_scope.cancel()


async def test_failing_handler_closes_only_its_link(kits, caplog):
    async def handler(stream, identity, fqcn):
        if fqcn == "site-1.bad":
            raise RuntimeError("handler bug")
        await echo(stream, identity, fqcn)

    with trio.fail_after(10), caplog.at_level(logging.ERROR, "cellnet.transport.tcp"):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, kits, handler)
            bad = await open_link_stream(HOST, port, kits / "site-1", my_fqcn="site-1.bad")
            assert await bad.stream.receive_some(10) == b""  # server closed it
            await bad.stream.aclose()
            good = await open_link_stream(HOST, port, kits / "site-2", my_fqcn="site-2")
            async with good.stream:
                await good.stream.send_all(b"still serving")
                assert await good.stream.receive_some(100) == b"still serving"
            nursery.cancel_scope.cancel()
    assert "handler bug" in caplog.text
