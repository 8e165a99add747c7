"""Strict CBOR decoding of untrusted bytes: one complete item, nothing after it."""

from __future__ import annotations

import io
from typing import Any

import cbor2

from cellnet.errors import RemoteProtocolError


def loads_exact(data: Any, what: str) -> Any:
    """Decode exactly one CBOR item filling ``data``; RemoteProtocolError otherwise."""
    fp = io.BytesIO(data)
    with fp.getbuffer() as view:
        end = view.nbytes
    try:
        value = cbor2.CBORDecoder(fp).decode()
    except Exception as exc:  # cbor2 raises several types (and RecursionError) on bad input
        raise RemoteProtocolError(f"malformed CBOR in {what}: {exc}") from exc
    if fp.tell() != end:
        raise RemoteProtocolError(f"{what}: trailing bytes after the CBOR item")
    return value
