"""TLSStream over real loopback sockets: sizes, segments, duplex, closing, conformance, auth."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing
from transport_helpers import socket_pair, tls_pair

from cellnet.errors import AuthError, CertificateExpiredError, UnknownCAError
from cellnet.security import client_context, server_context
from cellnet.transport import TLSStream

MiB = 1 << 20


async def receive_exactly(stream: TLSStream, n: int, chunk: int = MiB) -> bytes:
    out = bytearray()
    buf = bytearray(chunk)
    while len(out) < n:
        got = await stream.receive_into(memoryview(buf)[: min(chunk, n - len(out))])
        assert got, "unexpected end of stream"
        out += buf[:got]
    return bytes(out)


async def test_handshake_is_tls13_and_mutual(server_ctx, client_ctx):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        async with client, server:
            assert client.ssl_object.version() == "TLSv1.3"
            assert server.getpeercert()["subject"]  # the client presented a certificate
            assert client.getpeercert()["subject"]


@pytest.mark.parametrize("size", [1, 100, 16383, 16384, 16385, MiB + 7, 4 * MiB])
async def test_round_trip_sizes(server_ctx, client_ctx, size):
    data = os.urandom(size)
    with trio.fail_after(20):
        client, server = await tls_pair(server_ctx, client_ctx)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, data)
            assert await receive_exactly(server, size) == data


async def test_empty_send_and_lazy_handshake(server_ctx, client_ctx):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx, handshake=False)

        async def send():
            await client.send_all(b"")
            await client.send_all(b"ok")

        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(send)
            assert await server.receive_some(10) == b"ok"


async def test_segments_arrive_in_order_small_flushes(server_ctx, client_ctx):
    segments = [bytes([i]) * (i * 997) for i in range(1, 60)]
    with trio.fail_after(10):
        client, server = await tls_pair(
            server_ctx, client_ctx, write_size=4096, flush_size=8192, read_size=5000
        )

        async def send():
            await client.send_segments(segments)
            await client.send_segments([memoryview(b"tail"), bytearray(b"!")])

        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(send)
            expected = b"".join(segments) + b"tail!"
            assert await receive_exactly(server, len(expected), 3000) == expected


async def test_full_duplex_large_transfers_do_not_deadlock(server_ctx, client_ctx):
    a, b = os.urandom(3 * MiB), os.urandom(3 * MiB)
    got: dict[str, bytes] = {}
    with trio.fail_after(20):
        client, server = await tls_pair(server_ctx, client_ctx)

        async def recv(name, stream, n):
            got[name] = await receive_exactly(stream, n, 70_000)

        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, a)
            nursery.start_soon(server.send_all, b)
            nursery.start_soon(recv, "server", server, len(a))
            nursery.start_soon(recv, "client", client, len(b))
    assert got == {"server": a, "client": b}


async def test_receive_some_respects_max_bytes(server_ctx, client_ctx):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        async with client, server:
            await client.send_all(b"abcdef" * 1000)
            first = await server.receive_some(5)
            assert first == b"abcde"
            rest = bytearray(first)
            while len(rest) < 6000:
                rest += await server.receive_some()
            assert rest == b"abcdef" * 1000
            with pytest.raises(ValueError):
                await server.receive_some(0)
            with pytest.raises(ValueError):
                await server.receive_into(bytearray())
            with pytest.raises(TypeError):
                await server.receive_into(b"readonly")


async def test_receive_some_returns_every_buffered_record_as_bytes(server_ctx, client_ctx):
    """The receive fast path: records already buffered behind one socket read come back
    together from one call, as ``bytes``, up to ``max_bytes``; the rest stays buffered."""
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        async with client, server:
            for word in (b"one ", b"two ", b"three"):  # three records, one send each
                await client.send_all(word)
            await trio.sleep(0.05)  # all three are in the server's socket now
            got = await server.receive_some()
            assert type(got) is bytes and got == b"one two three"
            for word in (b"four ", b"five"):
                await client.send_all(word)
            await trio.sleep(0.05)
            assert await server.receive_some(7) == b"four fi"  # stops inside a record
            assert await server.receive_some() == b"ve"
            big = os.urandom(3 * 16384 + 5)  # several full records in one socket read
            await client.send_all(big)
            await trio.sleep(0.05)
            out = bytearray()
            while len(out) < len(big):
                out += await server.receive_some()
            assert out == big


async def test_clean_close_gives_repeated_eof_then_closed(server_ctx, client_ctx):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        await client.send_all(b"last words")
        await client.aclose()
        assert await receive_exactly(server, 10) == b"last words"
        assert await server.receive_some(10) == b""
        assert await server.receive_some(10) == b""
        await server.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await server.receive_some(10)
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")


async def test_peer_closing_mid_record_is_broken(server_ctx, client_ctx):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        client.ssl_object.write(b"z" * 5000)  # one record, encrypted but not sent
        record = client._outgoing.read()
        await client.transport_stream.send_all(record[: len(record) // 2])
        await client.transport_stream.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some(10_000)
        with pytest.raises(trio.BrokenResourceError):  # and it stays broken
            await server.receive_some(10)
        await server.aclose()


async def test_peer_closing_without_close_notify_is_broken(server_ctx, client_ctx):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        await client.send_all(b"hi")
        await client.transport_stream.aclose()
        assert await server.receive_some(10) == b"hi"
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some(10)
        await server.aclose()


async def test_two_receivers_conflict(server_ctx, client_ctx):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        async with client, server:
            with pytest.RaisesGroup(trio.BusyResourceError):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(server.receive_some, 10)
                    nursery.start_soon(server.receive_some, 10)


async def test_close_while_receiving_raises_closed(server_ctx, client_ctx):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)

        async def receiver():
            with pytest.raises(trio.ClosedResourceError):
                await server.receive_some(10)

        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            await server.aclose()


async def test_check_two_way_stream_conformance(server_ctx, client_ctx):
    async def maker():
        return await tls_pair(server_ctx, client_ctx)

    with trio.fail_after(30):
        await trio.testing.check_two_way_stream(maker, None)


async def _failed_handshake(sctx, cctx):
    """Run a handshake plus a first exchange; the exceptions (or None) of client and server."""
    client, server = await tls_pair(sctx, cctx, handshake=False)
    errors: dict[str, BaseException | None] = {}

    async def side(name, stream, first):
        try:
            if first:
                await stream.send_all(b"ping")
            await stream.receive_some(10)
            errors[name] = None
        except (AuthError, trio.BrokenResourceError) as exc:
            errors[name] = exc

    with trio.fail_after(10):
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(side, "client", client, True)
            nursery.start_soon(side, "server", server, False)
    return errors


async def test_expired_client_cert_is_typed_on_both_sides(server_ctx, expired_site_kit):
    errors = await _failed_handshake(server_ctx, client_context(expired_site_kit))
    assert isinstance(errors["server"], CertificateExpiredError)
    assert isinstance(errors["client"], CertificateExpiredError)
    assert errors["client"].by_peer


async def test_other_ca_is_unknown_ca(server_ctx, other_kits):
    errors = await _failed_handshake(server_ctx, client_context(other_kits / "site-1"))
    assert isinstance(errors["server"], UnknownCAError)
    assert isinstance(errors["client"], UnknownCAError)


async def test_server_from_other_ca_is_refused_by_client(client_ctx, other_kits):
    errors = await _failed_handshake(server_context(other_kits / "server"), client_ctx)
    assert isinstance(errors["client"], UnknownCAError)
    assert not errors["client"].by_peer


async def test_bad_sizes_are_refused(client_ctx):
    c, s = await socket_pair()
    async with c, s:
        with pytest.raises(ValueError, match="read_size"):
            TLSStream(c, client_ctx, read_size=0)


@pytest.mark.parametrize("api", ["receive_some", "receive_into"])
async def test_a_cancelled_receive_loses_no_buffered_bytes(server_ctx, client_ctx, api):
    with trio.fail_after(10):
        client, server = await tls_pair(server_ctx, client_ctx)
        await client.send_all(b"0123456789" * 10)
        first = await server.receive_some(10)  # the rest stays buffered in the TLS engine
        assert first == b"0123456789"
        for _ in range(3):  # cancelled before the call: nothing may be taken
            with trio.CancelScope() as scope:
                scope.cancel()
                if api == "receive_some":
                    await server.receive_some(10)
                else:
                    await server.receive_into(bytearray(10))
            assert scope.cancelled_caught
        rest = await receive_exactly(server, 90)
        assert first + rest == b"0123456789" * 10
        await client.aclose()
        await server.aclose()
