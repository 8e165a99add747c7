"""Transport: TLS 1.3 links over trio TCP (fast MemoryBIO engine), HELLO identity check, backoff."""

from __future__ import annotations

from cellnet.transport.backoff import Backoff, connect_with_retry
from cellnet.transport.tcp import PROTOCOL_VERSION, PeerStream, open_link_stream, serve_links
from cellnet.transport.tls import TLSStream

__all__ = [
    "PROTOCOL_VERSION",
    "Backoff",
    "PeerStream",
    "TLSStream",
    "connect_with_retry",
    "open_link_stream",
    "serve_links",
]
