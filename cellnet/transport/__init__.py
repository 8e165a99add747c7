"""Transport: TLS 1.3 links over trio TCP (fast MemoryBIO engine), HELLO identity check, backoff."""

from __future__ import annotations

from cellnet.transport.tls import TLSStream

__all__ = ["TLSStream"]
