"""Helpers for the transport tests: connected loopback socket and TLSStream pairs."""

from __future__ import annotations

import trio

from cellnet.transport import TLSStream

HOST = "127.0.0.1"


async def socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """(client, server) ends of one real TCP connection on 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    try:
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream(HOST, port)
        server = await listeners[0].accept()
    finally:
        for listener in listeners:
            await listener.aclose()
    return client, server


async def tls_pair(server_ctx, client_ctx, *, handshake: bool = True, **kw):
    """(client, server) TLSStreams over a loopback connection, handshaken unless told not to."""
    c_sock, s_sock = await socket_pair()
    client = TLSStream(c_sock, client_ctx, server_hostname="localhost", **kw)
    server = TLSStream(s_sock, server_ctx, server_side=True, **kw)
    if handshake:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.do_handshake)
            nursery.start_soon(server.do_handshake)
    return client, server
