"""Mutual-TLS links over TCP: listen and connect, then a HELLO exchange that binds FQCN to cert.

Setting up a link, in order:

1. TCP connect / accept (``TCP_NODELAY`` on), then the TLS 1.3 handshake of a
   :class:`~cellnet.transport.TLSStream`; certificate problems surface as the
   typed :class:`~cellnet.errors.AuthError` subclasses.
2. The connecting side sends a HELLO frame whose headers carry its FQCN and
   the protocol version.  The listener checks the announced FQCN against the
   client certificate (:func:`cellnet.security.verify_peer`: site part == CN)
   and answers with its own HELLO -- or, on a mismatch, a GOAWAY saying why,
   after which it logs the refusal and closes the link.  Answering (rather
   than both sides sending at once) lets the client report the refusal as an
   :class:`~cellnet.errors.IdentityMismatchError` instead of a bare EOF.
3. The client checks the listener's HELLO the same way (and against
   ``expected_peer`` if given).

HELLOs are read with exact-length reads (prefix, then headers), so bytes the
peer sends right after its HELLO stay in the stream for the link's owner.
The stream handed over is a plain ``trio.abc.Stream`` (plus
``send_segments``/``receive_into``), the only interface the router needs.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import trio

from cellnet.errors import (
    AuthError,
    IdentityMismatchError,
    LinkError,
    ProtocolError,
    RemoteProtocolError,
)
from cellnet.fqcn import validate
from cellnet.security import StartupKit, client_context, server_context, verify_peer
from cellnet.security.names import Identity, site_part
from cellnet.transport.tls import TLSStream
from cellnet.wire import NEED_DATA, PREFIX_SIZE, FrameDecoder, FrameType, WireLimits, encode_frame
from cellnet.wire.frame import PREFIX, Frame

__all__ = ["PROTOCOL_VERSION", "PeerStream", "open_link_stream", "serve_links"]

log = logging.getLogger(__name__)

#: Version of the link protocol announced in HELLO; a peer with another one is refused.
PROTOCOL_VERSION = 1
HELLO_FQCN = "fqcn"
HELLO_VERSION = "version"
GOAWAY_REASON = "reason"
GOAWAY_DETAIL = "detail"
#: A HELLO (or the GOAWAY refusing one) is small; anything bigger is hostile.
HELLO_LIMITS = WireLimits(max_header_bytes=4096, max_payload_bytes=4096)
DEFAULT_TIMEOUT = 10.0

KitLike = StartupKit | str | os.PathLike[str]
LinkHandler = Callable[[TLSStream, Identity, str], Awaitable[Any]]


class PeerStream(NamedTuple):
    """An authenticated link: the stream, the identity its certificate proves, its FQCN."""

    stream: TLSStream
    identity: Identity
    fqcn: str


def _kit(kit: KitLike) -> StartupKit:
    return kit if isinstance(kit, StartupKit) else StartupKit.load(kit)


def _nodelay(raw: trio.SocketStream) -> None:
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)


async def _receive_exactly(stream: TLSStream, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        count = await stream.receive_into(view[got:])
        if not count:
            raise trio.BrokenResourceError("the peer closed the link during setup")
        got += count
    return buf


async def _receive_setup_frame(stream: TLSStream) -> Frame:
    """One HELLO/GOAWAY frame, read to its last byte and not one byte further."""
    decoder = FrameDecoder(HELLO_LIMITS)
    prefix = await _receive_exactly(stream, PREFIX_SIZE)
    decoder.receive_data(prefix)
    frame = decoder.next_frame()  # validates the prefix and its lengths against HELLO_LIMITS
    if frame is NEED_DATA:
        fields = PREFIX.unpack(prefix)
        header_len, payload_len = fields[5], fields[7]
        decoder.receive_data(await _receive_exactly(stream, header_len + payload_len))
        frame = decoder.next_frame()
    if not isinstance(frame, Frame):
        raise RemoteProtocolError("the peer's setup frame is incomplete")
    return frame


def _refusal(frame: Frame) -> Exception:
    reason = frame.headers.get(GOAWAY_REASON)
    detail = str(frame.headers.get(GOAWAY_DETAIL, ""))[:500]
    if reason == "identity":
        return IdentityMismatchError(f"the peer refused our identity: {detail}", by_peer=True)
    if reason == "auth":
        return AuthError(f"the peer refused to authenticate us: {detail}", by_peer=True)
    return RemoteProtocolError(f"the peer refused the link ({reason!r}): {detail}")


def _announced(frame: Frame) -> str:
    """The FQCN a HELLO announces, after checking its version."""
    if frame.type is FrameType.GOAWAY:
        raise _refusal(frame)
    if frame.type is not FrameType.HELLO:
        raise RemoteProtocolError(f"expected a HELLO frame, got {frame.type.name}")
    version = frame.headers.get(HELLO_VERSION)
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"the peer speaks link protocol {version!r}, we speak {PROTOCOL_VERSION}"
        )
    fqcn = frame.headers.get(HELLO_FQCN)
    if not isinstance(fqcn, str):
        raise RemoteProtocolError(f"the peer's HELLO has no FQCN (got {fqcn!r})")
    return fqcn


def _hello(my_fqcn: str) -> list:
    return encode_frame(FrameType.HELLO, {HELLO_FQCN: my_fqcn, HELLO_VERSION: PROTOCOL_VERSION})


async def _refuse(stream: TLSStream, exc: Exception) -> None:
    """Tell the peer why (best effort, briefly); the caller closes the link."""
    reason = "identity" if isinstance(exc, IdentityMismatchError) else (
        "auth" if isinstance(exc, AuthError) else "protocol"
    )
    frame = encode_frame(FrameType.GOAWAY, {GOAWAY_REASON: reason, GOAWAY_DETAIL: str(exc)})
    with trio.move_on_after(1):
        try:
            await stream.send_segments(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _accept_link(raw: trio.SocketStream, ctx: Any, my_fqcn: str) -> PeerStream:
    """Handshake, read and check the client's HELLO, answer; the caller closes ``raw`` on error."""
    stream = TLSStream(raw, ctx, server_side=True)
    await stream.do_handshake()
    frame = await _receive_setup_frame(stream)
    try:
        fqcn = _announced(frame)
        identity = verify_peer(stream.ssl_object, fqcn)
    except (AuthError, ProtocolError) as exc:
        await _refuse(stream, exc)
        raise
    await stream.send_segments(_hello(my_fqcn))
    return PeerStream(stream, identity, fqcn)


def _peer_address(raw: trio.SocketStream) -> str:
    try:
        host, port = raw.socket.getpeername()[:2]
    except OSError:
        return "<unknown>"
    return f"{host}:{port}"


async def _linger_close(raw: trio.SocketStream, seconds: float = 1.0) -> None:
    """Close a refused connection without a TCP reset eating our alert or GOAWAY.

    Closing with unread input makes the kernel send RST, which can destroy the
    bytes that tell the peer why it was refused before it reads them; so we
    half-close, drain what the peer still sends (briefly), then close.
    """
    with trio.move_on_after(seconds):
        try:
            await raw.send_eof()
            while await raw.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    await trio.aclose_forcefully(raw)


async def serve_links(
    handler: LinkHandler,
    kit: KitLike,
    *,
    host: str = "127.0.0.1",
    port: int,
    my_fqcn: str | None = None,
    handshake_timeout: float = DEFAULT_TIMEOUT,
    on_refused: Callable[[str, BaseException], None] | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept mutual-TLS links on ``host:port`` forever; ``handler(stream, identity, fqcn)`` each.

    ``task_status.started`` gets the listeners (``port=0`` picks a free port:
    read it from ``listeners[0].socket.getsockname()``).  A peer that fails
    TLS, HELLO or the identity check within ``handshake_timeout`` is logged
    and dropped; so is a link whose handler raises: other links never notice.
    The stream is closed when the handler returns.  ``on_refused(address, exc)``
    is told of every refused peer (for the audit log) before it is dropped.
    """
    kit = _kit(kit)
    ctx = server_context(kit)
    my_fqcn = validate(my_fqcn if my_fqcn is not None else kit.name)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            msg = f"cannot listen on {host}:{port}: port {port} is already in use"
        else:
            msg = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise OSError(exc.errno, msg) from exc

    async def on_connection(raw: trio.SocketStream) -> None:
        address = _peer_address(raw)
        try:
            _nodelay(raw)
            with trio.fail_after(handshake_timeout):
                link = await _accept_link(raw, ctx, my_fqcn)
        except (AuthError, ProtocolError, trio.BrokenResourceError, trio.TooSlowError,
                OSError) as exc:
            log.warning("refused link from %s: %s: %s", address, type(exc).__name__, exc)
            if on_refused is not None:
                on_refused(address, exc)
            await _linger_close(raw)
            return
        except BaseException:
            await trio.aclose_forcefully(raw)
            raise
        log.info("link from %s up: %s (%s)", address, link.fqcn, link.identity.name)
        async with link.stream:
            try:
                await handler(*link)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.info("link from %s (%s) lost: %s", address, link.fqcn, exc)
            except Exception:
                log.exception("handler of link %s (%s) failed; link closed", link.fqcn, address)

    await trio.serve_listeners(on_connection, listeners, task_status=task_status)


async def open_link_stream(
    host: str,
    port: int,
    kit: KitLike,
    *,
    my_fqcn: str,
    expected_peer: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PeerStream:
    """Connect to a cellnet listener, authenticate both ways, and return the :class:`PeerStream`.

    ``expected_peer`` is the FQCN we mean to reach (default: the project
    server); when it is the server, its certificate must also name the host
    of the kit's connection config.  Raises :class:`LinkError` when the peer
    cannot be reached in ``timeout`` seconds, an :class:`AuthError` subclass
    when either side's identity is refused.
    """
    kit = _kit(kit)
    my_fqcn = validate(my_fqcn)
    if expected_peer is not None:
        validate(expected_peer)
    to_server = expected_peer is None or site_part(expected_peer) == kit.server.name
    ctx = client_context(kit, check_hostname=to_server)
    where = f"{host}:{port}"
    stage = "connecting"
    stream: TLSStream | None = None
    try:
        with trio.fail_after(timeout):
            try:
                raw = await trio.open_tcp_stream(host, port)
            except OSError as exc:
                raise LinkError(f"cannot reach {where}: {exc.strerror or exc}") from exc
            _nodelay(raw)
            stream = TLSStream(raw, ctx, server_hostname=kit.server_hostname if to_server else None)
            stage = "in the TLS handshake"
            await stream.do_handshake()
            stage = "waiting for the peer's HELLO"
            await stream.send_segments(_hello(my_fqcn))
            fqcn = _announced(await _receive_setup_frame(stream))
            identity = verify_peer(stream.ssl_object, fqcn)
            if expected_peer is not None and fqcn != expected_peer:
                raise IdentityMismatchError(f"expected {expected_peer!r} at {where}, got {fqcn!r}")
    except BaseException as exc:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        if isinstance(exc, trio.TooSlowError):
            raise LinkError(f"timed out after {timeout}s {stage} ({where})") from None
        if isinstance(exc, trio.BrokenResourceError):
            raise LinkError(f"{where} closed the link {stage}") from exc
        raise
    return PeerStream(stream, identity, fqcn)
