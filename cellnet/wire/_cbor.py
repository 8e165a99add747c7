"""Strict CBOR decoding of untrusted bytes: one complete item, nothing after it.

The native ``cn_cbor_check`` proves in one pass that small bytes are exactly
one well-formed item; then plain ``cbor2.loads`` (which ignores trailing
bytes) decodes it.  A large item (a BATCH payload) goes straight to a
``CBORDecoder`` on a file object, whose fixed cost is then the smaller, and so
does anything the check refuses -- malformed, truncated, trailing bytes, or
nested deeper than it tracks -- which gives the precise error (or the value,
if only the native depth bound was exceeded).
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from cellnet.errors import RemoteProtocolError
from cellnet.native import lib

_check = lib.cn_cbor_check
_loads = cbor2.loads
#: Above this size the stream decoder's fixed overhead is smaller than a separate check pass.
_SMALL = 4096


def loads_exact(data: Any, what: str) -> Any:
    """Decode exactly one CBOR item filling ``data``; RemoteProtocolError otherwise."""
    if type(data) is not bytes:
        data = bytes(data)  # cbor2 would copy it anyway; bytes also go to cffi as they are
    if len(data) <= _SMALL and _check(data, len(data)) == 0:
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
