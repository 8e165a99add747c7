"""Helpers for the wire tests (a uniquely named module, not conftest): prefixes, drain loop."""

from __future__ import annotations

import struct

from cellnet.native import crc32c
from cellnet.wire import CLOSED, NEED_DATA
from cellnet.wire.frame import MAGIC, PREFIX_HEAD, VERSION


def make_prefix(
    ftype: int = 2,
    *,
    hlen: int = 0,
    hcrc: int = 0,
    plen: int = 0,
    pcrc: int = 0,
    flags: int = 0,
    reserved: int = 0,
    version: int = VERSION,
    magic: bytes = MAGIC,
) -> bytes:
    """A 32-byte prefix with a correct prefix CRC for whatever fields are given."""
    head = PREFIX_HEAD.pack(magic, version, ftype, flags, reserved, hlen, hcrc, plen, pcrc)
    return head + struct.pack("<I", crc32c(head))


def drain(decoder) -> list:
    """Every frame the decoder can produce now (stops at NEED_DATA or CLOSED)."""
    out = []
    while True:
        f = decoder.next_frame()
        if f is NEED_DATA or f is CLOSED:
            return out
        out.append(f)

