"""Strict CBOR decoding of untrusted bytes: one complete item, nothing after it.

The native ``cn_cbor_check`` proves in one pass that the bytes are exactly one
well-formed item; then plain ``cbor2.loads`` (which ignores trailing bytes)
decodes it.  Anything the check does not accept -- malformed, truncated,
trailing bytes, or nested deeper than it tracks -- goes the slow way, through
a ``CBORDecoder`` on a file object, which gives the precise error (or the
value, if only the native depth bound was exceeded).
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from cellnet.errors import RemoteProtocolError
from cellnet.native import lib

_check = lib.cn_cbor_check
_loads = cbor2.loads


def loads_exact(data: Any, what: str) -> Any:
    """Decode exactly one CBOR item filling ``data``; RemoteProtocolError otherwise."""
    if type(data) is not bytes:
        data = bytes(data)  # cbor2 would copy it anyway; bytes also go to cffi as they are
    if _check(data, len(data)) == 0:
        try:
            return _loads(data)
        except Exception as exc:  # well-formed yet undecodable: bad UTF-8, bad tag content, ...
            raise RemoteProtocolError(f"malformed CBOR in {what}: {exc}") from exc
    return _loads_stream(data, what)


def _loads_stream(data: bytes, what: str) -> Any:
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp).decode()
    except Exception as exc:  # cbor2 raises several types (and RecursionError) on bad input
        raise RemoteProtocolError(f"malformed CBOR in {what}: {exc}") from exc
    if fp.tell() != len(data):
        raise RemoteProtocolError(f"{what}: trailing bytes after the CBOR item")
    return value
